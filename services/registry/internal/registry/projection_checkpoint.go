package registry

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/tidwall/btree"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Checkpoint bodies are sequences of uvarints and length-prefixed byte strings.

type ckptWriter struct {
	w   *bufio.Writer
	buf [binary.MaxVarintLen64]byte
}

func (c *ckptWriter) uvarint(v uint64) {
	c.w.Write(c.buf[:binary.PutUvarint(c.buf[:], v)])
}

func (c *ckptWriter) varint(v int64) {
	c.w.Write(c.buf[:binary.PutVarint(c.buf[:], v)])
}

func (c *ckptWriter) bytes(b []byte) {
	c.uvarint(uint64(len(b)))
	c.w.Write(b)
}

func (c *ckptWriter) str(s string) {
	c.uvarint(uint64(len(s)))
	c.w.WriteString(s)
}

type ckptReader struct {
	r *bufio.Reader
}

// maxCkptString bounds one string of a checkpoint body.
const maxCkptString = 64 << 20

func (c *ckptReader) uvarint() (uint64, error) { return binary.ReadUvarint(c.r) }

func (c *ckptReader) varint() (int64, error) { return binary.ReadVarint(c.r) }

func (c *ckptReader) bytes() ([]byte, error) {
	n, err := c.uvarint()
	if err != nil {
		return nil, err
	}
	if n > maxCkptString {
		return nil, fmt.Errorf("registry: checkpoint string of %d bytes", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(c.r, b)
	return b, err
}

func (c *ckptReader) str() (string, error) {
	b, err := c.bytes()
	return string(b), err
}

// readCkptHeader starts reading a checkpoint body through a buffer of size bytes: its format must
// be format (what names the checkpoint in the error); n is the count of items that follows it.
func readCkptHeader(r io.Reader, size int, what string, format uint64) (c *ckptReader, n uint64, err error) {
	c = &ckptReader{r: bufio.NewReaderSize(r, size)}
	got, err := c.uvarint()
	if err != nil {
		return nil, 0, err
	}
	if got != format {
		return nil, 0, fmt.Errorf("registry: %s checkpoint format %d, want %d", what, got, format)
	}
	if n, err = c.uvarint(); err != nil {
		return nil, 0, err
	}
	return c, n, nil
}

// end checks that the body ends here (reading to io.EOF, where the checksum is verified).
func (c *ckptReader) end() error {
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("registry: data after the end of the checkpoint")
		}
		return err
	}
	return nil
}

// agentsCheckpointFormat is the version of the agents checkpoint body. Format 2 holds the indexes
// as they are (posting lists in the roaring format, the orders as ordinal lists) so that a restore
// decodes no agent and sorts nothing.
const agentsCheckpointFormat = 2

// savedTenant is one tenant's part of an agents checkpoint, captured under the read lock.
type savedTenant struct {
	id      string
	entries []agentEntry
	post    []savedPost
	byName  *btree.BTreeG[nameItem]
	byDisp  *btree.BTreeG[dispItem]
	byExp   *btree.BTreeG[numItem]
	byTier  *btree.BTreeG[numItem]
}

type savedPost struct {
	key string
	set *roaring.Bitmap
}

// Checkpoint implements eventstore.Checkpointer: it copies the entries (their bytes are never
// changed in place, so the copy shares them), the posting lists, the order indexes (copy on
// write) and the key holders, and returns their writer.
func (p *AgentProjection) Checkpoint() func(io.Writer) error {
	p.mu.RLock()
	ids := make([]string, 0, len(p.tenants))
	for id := range p.tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tenants := make([]savedTenant, len(ids))
	for i, id := range ids {
		t := p.tenants[id]
		s := savedTenant{id: id, entries: slices.Clone(t.entries), post: make([]savedPost, 0, len(t.post)),
			byName: t.byName.Copy(), byDisp: t.byDisp.Copy(), byExp: t.byExp.Copy(), byTier: t.byTier.Copy()}
		for k, b := range t.post {
			s.post = append(s.post, savedPost{k, b.Clone()})
		}
		tenants[i] = s
	}
	keys := make([][2]string, 0, len(p.keys))
	for k, v := range p.keys {
		keys = append(keys, [2]string{k, v})
	}
	p.mu.RUnlock()
	return func(w io.Writer) error {
		slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		c := &ckptWriter{w: bufio.NewWriterSize(w, 256<<10)}
		c.uvarint(agentsCheckpointFormat)
		c.uvarint(uint64(len(tenants)))
		for _, s := range tenants {
			if err := s.write(c); err != nil {
				return err
			}
		}
		c.uvarint(uint64(len(keys)))
		for _, kv := range keys {
			c.str(kv[0])
			c.str(kv[1])
		}
		return c.w.Flush()
	}
}

// write writes one tenant: its entries, posting lists and orders (each a list of ordinals).
func (s *savedTenant) write(c *ckptWriter) error {
	c.str(s.id)
	c.uvarint(uint64(len(s.entries)))
	for i := range s.entries {
		e := &s.entries[i]
		c.str(e.id)
		c.uvarint(e.regSeq)
		c.varint(e.create)
		c.varint(e.expire)
		c.varint(int64(e.tier))
		c.str(e.displayName)
		c.bytes(e.data)
	}
	slices.SortFunc(s.post, func(a, b savedPost) int { return strings.Compare(a.key, b.key) })
	c.uvarint(uint64(len(s.post)))
	var buf bytes.Buffer
	for _, sp := range s.post {
		buf.Reset()
		if _, err := sp.set.WriteTo(&buf); err != nil {
			return err
		}
		c.str(sp.key)
		c.bytes(buf.Bytes())
	}
	s.byName.Scan(func(it nameItem) bool { c.uvarint(uint64(it.ord)); return true })
	s.byDisp.Scan(func(it dispItem) bool { c.uvarint(uint64(it.ord)); return true })
	s.byExp.Scan(func(it numItem) bool { c.uvarint(uint64(it.ord)); return true })
	s.byTier.Scan(func(it numItem) bool { c.uvarint(uint64(it.ord)); return true })
	// The inactive_since order as it is without activity (restored by the activity runner).
	idle := make([]uint32, len(s.entries))
	for i := range idle {
		idle[i] = uint32(i)
	}
	slices.SortFunc(idle, func(a, b uint32) int {
		ea, eb := &s.entries[a], &s.entries[b]
		if ea.create != eb.create {
			return cmp.Compare(ea.create, eb.create)
		}
		return strings.Compare(ea.id, eb.id)
	})
	for _, o := range idle {
		c.uvarint(uint64(o))
	}
	return nil
}

// slab hands out the agents' bytes from large blocks: a restore allocates a few blocks instead of
// one array per agent.
type slab struct{ block []byte }

func (s *slab) bytes(c *ckptReader) ([]byte, error) {
	n, err := c.uvarint()
	if err != nil {
		return nil, err
	}
	if n > maxCkptString {
		return nil, fmt.Errorf("registry: checkpoint string of %d bytes", n)
	}
	if uint64(cap(s.block)-len(s.block)) < n {
		s.block = make([]byte, 0, max(4<<20, int(n)))
	}
	b := s.block[len(s.block) : len(s.block)+int(n) : len(s.block)+int(n)]
	s.block = s.block[:len(s.block)+int(n)]
	_, err = io.ReadFull(c.r, b)
	return b, err
}

// readTenant reads one tenant written by savedTenant.write and rebuilds its indexes.
func readTenant(c *ckptReader, sl *slab) (string, *tenantIndex, error) {
	id, err := c.str()
	if err != nil {
		return "", nil, err
	}
	n64, err := c.uvarint()
	if err != nil {
		return "", nil, err
	}
	if n64 > math.MaxUint32-1 {
		return "", nil, fmt.Errorf("registry: agents checkpoint: tenant %s has %d agents", id, n64)
	}
	n := int(n64)
	t := newTenantIndex()
	t.entries = make([]agentEntry, n)
	t.ords = make(map[string]uint32, n)
	for i := range t.entries {
		e := &t.entries[i]
		if e.id, err = c.str(); err != nil {
			return "", nil, err
		}
		if _, dup := t.ords[e.id]; dup {
			return "", nil, fmt.Errorf("registry: agents checkpoint holds agent %s/%s twice", id, e.id)
		}
		t.ords[e.id] = uint32(i)
		e.key = keyOf(e.id)
		if e.regSeq, err = c.uvarint(); err != nil {
			return "", nil, err
		}
		if i > 0 && e.regSeq <= t.entries[i-1].regSeq {
			return "", nil, fmt.Errorf("registry: agents checkpoint: agents of tenant %s out of registration order", id)
		}
		if e.create, err = c.varint(); err != nil {
			return "", nil, err
		}
		if e.expire, err = c.varint(); err != nil {
			return "", nil, err
		}
		tier, err := c.varint()
		if err != nil {
			return "", nil, err
		}
		e.tier = int32(tier)
		if e.displayName, err = c.str(); err != nil {
			return "", nil, err
		}
		if e.data, err = sl.bytes(c); err != nil {
			return "", nil, err
		}
	}
	np, err := c.uvarint()
	if err != nil {
		return "", nil, err
	}
	for range np {
		k, err := c.str()
		if err != nil {
			return "", nil, err
		}
		data, err := c.bytes()
		if err != nil {
			return "", nil, err
		}
		b := roaring.New()
		if err := b.UnmarshalBinary(data); err != nil {
			return "", nil, fmt.Errorf("registry: agents checkpoint, posting list %q of tenant %s: %w", k, id, err)
		}
		if !b.IsEmpty() && int(b.Maximum()) >= n {
			return "", nil, fmt.Errorf("registry: agents checkpoint, posting list %q of tenant %s names agent %d of %d", k, id, b.Maximum(), n)
		}
		t.post[k] = b
	}
	seen := make([]bool, n)
	order := func(name string, load func(o uint32)) error {
		clear(seen)
		for range n {
			o, err := c.uvarint()
			if err != nil {
				return err
			}
			if o >= uint64(n) || seen[o] {
				return fmt.Errorf("registry: agents checkpoint, %s order of tenant %s: bad ordinal %d", name, id, o)
			}
			seen[o] = true
			load(uint32(o))
		}
		return nil
	}
	steps := []struct {
		name string
		load func(o uint32)
	}{
		{"name", func(o uint32) {
			t.byName.Load(nameItem{t.entries[o].key, o})
			t.byAct.Load(t.num(o, 0)) // no activity yet: the name order
		}},
		{"display_name", func(o uint32) { t.byDisp.Load(dispItem{t.entries[o].displayName, t.entries[o].key, o}) }},
		{"expire_time", func(o uint32) { t.byExp.Load(t.num(o, t.entries[o].expire)) }},
		{"risk_tier", func(o uint32) { t.byTier.Load(t.num(o, int64(t.entries[o].tier))) }},
		{"create_time", func(o uint32) { t.byIdle.Load(t.num(o, t.entries[o].create)) }},
	}
	for _, s := range steps {
		if err := order(s.name, s.load); err != nil {
			return "", nil, err
		}
	}
	for _, tr := range []interface{ Len() int }{t.byName, t.byDisp, t.byExp, t.byTier, t.byIdle, t.byAct} {
		if tr.Len() != n {
			return "", nil, fmt.Errorf("registry: agents checkpoint: an order of tenant %s is not sorted", id)
		}
	}
	return id, t, nil
}

// Restore implements eventstore.Checkpointer: it loads the read model and its indexes from the
// checkpoint, keeping the activity already recorded, and replaces the current one only when all
// of it was read.
func (p *AgentProjection) Restore(r io.Reader) error {
	c, nt, err := readCkptHeader(r, 1<<20, "agents", agentsCheckpointFormat)
	if err != nil {
		return err
	}
	tenants := map[string]*tenantIndex{}
	count := 0
	sl := &slab{}
	for range nt {
		id, t, err := readTenant(c, sl)
		if err != nil {
			return err
		}
		if _, dup := tenants[id]; dup {
			return fmt.Errorf("registry: agents checkpoint holds tenant %s twice", id)
		}
		count += len(t.entries)
		tenants[id] = t
	}
	nk, err := c.uvarint()
	if err != nil {
		return err
	}
	keys := make(map[string]string, min(nk, 1<<24))
	for range nk {
		k, err := c.str()
		if err != nil {
			return err
		}
		v, err := c.str()
		if err != nil {
			return err
		}
		keys[k] = v
	}
	if err := c.end(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.tenants
	p.tenants, p.keys, p.count = tenants, keys, count
	for tid, t := range old { // the activity projection may have run first
		for i := range t.entries {
			if t.entries[i].lastActive != 0 {
				p.setActive(tid, t.entries[i].id, t.entries[i].lastActive)
			}
		}
		for id, at := range t.pending {
			p.setActive(tid, id, at)
		}
	}
	return nil
}

// activityCheckpointFormat is the version of the activity checkpoint body.
const activityCheckpointFormat = 1

type savedActivity struct {
	tenant, id string
	at         int64
}

// Checkpoint implements eventstore.Checkpointer: the latest activity of every agent.
func (a *ActivityProjection) Checkpoint() func(io.Writer) error {
	p := a.p
	p.mu.RLock()
	var acts []savedActivity
	for tid, t := range p.tenants {
		for i := range t.entries {
			if t.entries[i].lastActive != 0 {
				acts = append(acts, savedActivity{tid, t.entries[i].id, t.entries[i].lastActive})
			}
		}
		for id, at := range t.pending {
			acts = append(acts, savedActivity{tid, id, at})
		}
	}
	p.mu.RUnlock()
	return func(w io.Writer) error {
		slices.SortFunc(acts, func(x, y savedActivity) int {
			switch {
			case x.tenant != y.tenant:
				return strings.Compare(x.tenant, y.tenant)
			default:
				return strings.Compare(x.id, y.id)
			}
		})
		c := &ckptWriter{w: bufio.NewWriterSize(w, 256<<10)}
		c.uvarint(activityCheckpointFormat)
		c.uvarint(uint64(len(acts)))
		for _, s := range acts {
			c.str(s.tenant)
			c.str(s.id)
			c.uvarint(uint64(s.at))
		}
		return c.w.Flush()
	}
}

// Restore implements eventstore.Checkpointer: it records the checkpoint's activity (the latest of
// it and what is recorded already wins).
func (a *ActivityProjection) Restore(r io.Reader) error {
	c, n, err := readCkptHeader(r, 256<<10, "activity", activityCheckpointFormat)
	if err != nil {
		return err
	}
	acts := make([]savedActivity, 0, min(n, 1<<20))
	for range n {
		var s savedActivity
		if s.tenant, err = c.str(); err != nil {
			return err
		}
		if s.id, err = c.str(); err != nil {
			return err
		}
		at, err := c.uvarint()
		if err != nil {
			return err
		}
		s.at = int64(at)
		acts = append(acts, s)
	}
	if err := c.end(); err != nil {
		return err
	}
	p := a.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range acts {
		p.setActive(s.tenant, s.id, s.at)
	}
	return nil
}

// tenantsCheckpointFormat is the version of the tenants checkpoint body.
const tenantsCheckpointFormat = 1

// Checkpoint implements eventstore.Checkpointer: every tenant with its creation sequence.
func (p *TenantProjection) Checkpoint() func(io.Writer) error {
	p.mu.RLock()
	order := slices.Clone(p.order)
	p.mu.RUnlock()
	type saved struct {
		seq  uint64
		data []byte
		err  error
	}
	out := make([]saved, len(order))
	for i, e := range order {
		b, err := marshalDet.Marshal(e.tenant) // tenants are replaced, never changed in place
		out[i] = saved{e.created, b, err}
	}
	return func(w io.Writer) error {
		c := &ckptWriter{w: bufio.NewWriterSize(w, 64<<10)}
		c.uvarint(tenantsCheckpointFormat)
		c.uvarint(uint64(len(out)))
		for _, s := range out {
			if s.err != nil {
				return s.err
			}
			c.uvarint(s.seq)
			c.bytes(s.data)
		}
		return c.w.Flush()
	}
}

// Restore implements eventstore.Checkpointer.
func (p *TenantProjection) Restore(r io.Reader) error {
	c, n, err := readCkptHeader(r, 64<<10, "tenants", tenantsCheckpointFormat)
	if err != nil {
		return err
	}
	byID := map[string]*tenantEntry{}
	var order []*tenantEntry
	for range n {
		seq, err := c.uvarint()
		if err != nil {
			return err
		}
		data, err := c.bytes()
		if err != nil {
			return err
		}
		t := &registryv1.Tenant{}
		if err := proto.Unmarshal(data, t); err != nil {
			return fmt.Errorf("registry: tenants checkpoint: %w", err)
		}
		e := &tenantEntry{created: seq, tenant: t}
		byID[t.GetTenantId()] = e
		order = append(order, e)
	}
	if err := c.end(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byID, p.order = byID, order
	return nil
}
