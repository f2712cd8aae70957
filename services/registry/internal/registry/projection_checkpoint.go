package registry

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

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

// agentsCheckpointFormat is the version of the agents checkpoint body.
const agentsCheckpointFormat = 1

// savedAgent is one agent as a checkpoint holds it.
type savedAgent struct {
	id     string
	regSeq uint64
	data   []byte
}

// Checkpoint implements eventstore.Checkpointer: it copies the agents (their bytes are never
// changed in place, so the copy shares them) and the key holders, and returns their writer.
func (p *AgentProjection) Checkpoint() func(io.Writer) error {
	p.mu.RLock()
	tenants := make([]string, 0, len(p.tenants))
	for id := range p.tenants {
		tenants = append(tenants, id)
	}
	sort.Strings(tenants)
	agents := make([][]savedAgent, len(tenants))
	for i, id := range tenants {
		es := p.tenants[id].entries
		out := make([]savedAgent, len(es))
		for j := range es {
			out[j] = savedAgent{es[j].id, es[j].regSeq, es[j].data}
		}
		agents[i] = out
	}
	keys := make([][2]string, 0, len(p.keys))
	for k, v := range p.keys {
		keys = append(keys, [2]string{k, v})
	}
	p.mu.RUnlock()
	return func(w io.Writer) error {
		slices.SortFunc(keys, func(a, b [2]string) int {
			if a[0] < b[0] {
				return -1
			}
			if a[0] > b[0] {
				return 1
			}
			return 0
		})
		c := &ckptWriter{w: bufio.NewWriterSize(w, 256<<10)}
		c.uvarint(agentsCheckpointFormat)
		c.uvarint(uint64(len(tenants)))
		for i, id := range tenants {
			c.str(id)
			c.uvarint(uint64(len(agents[i])))
			for _, a := range agents[i] {
				c.str(a.id)
				c.uvarint(a.regSeq)
				c.bytes(a.data)
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

// Restore implements eventstore.Checkpointer: it builds the read model and its indexes from the
// checkpoint, keeping the activity already recorded, and replaces the current one only when all
// of it was read.
func (p *AgentProjection) Restore(r io.Reader) error {
	c := &ckptReader{r: bufio.NewReaderSize(r, 256<<10)}
	format, err := c.uvarint()
	if err != nil {
		return err
	}
	if format != agentsCheckpointFormat {
		return fmt.Errorf("registry: agents checkpoint format %d, want %d", format, agentsCheckpointFormat)
	}
	nt, err := c.uvarint()
	if err != nil {
		return err
	}
	tenants := map[string]*tenantIndex{}
	count := 0
	for range nt {
		id, err := c.str()
		if err != nil {
			return err
		}
		n, err := c.uvarint()
		if err != nil {
			return err
		}
		t := newTenantIndex()
		t.entries = make([]agentEntry, 0, n)
		for range n {
			aid, err := c.str()
			if err != nil {
				return err
			}
			seq, err := c.uvarint()
			if err != nil {
				return err
			}
			data, err := c.bytes()
			if err != nil {
				return err
			}
			a := &registryv1.Agent{}
			if err := proto.Unmarshal(data, a); err != nil {
				return fmt.Errorf("registry: agents checkpoint, agent %s/%s: %w", id, aid, err)
			}
			if _, dup := t.ords[aid]; dup {
				return fmt.Errorf("registry: agents checkpoint holds agent %s/%s twice", id, aid)
			}
			ord := uint32(len(t.entries))
			t.entries = append(t.entries, agentEntry{id: aid, regSeq: seq})
			t.ords[aid] = ord
			t.index(ord, a, data)
			t.byAct.Set(numItem{0, ord})
		}
		count += int(n)
		tenants[id] = t
	}
	nk, err := c.uvarint()
	if err != nil {
		return err
	}
	keys := make(map[string]string, nk)
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
				return cmpString(x.tenant, y.tenant)
			default:
				return cmpString(x.id, y.id)
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

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Restore implements eventstore.Checkpointer: it records the checkpoint's activity (the latest of
// it and what is recorded already wins).
func (a *ActivityProjection) Restore(r io.Reader) error {
	c := &ckptReader{r: bufio.NewReaderSize(r, 256<<10)}
	format, err := c.uvarint()
	if err != nil {
		return err
	}
	if format != activityCheckpointFormat {
		return fmt.Errorf("registry: activity checkpoint format %d, want %d", format, activityCheckpointFormat)
	}
	n, err := c.uvarint()
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
	c := &ckptReader{r: bufio.NewReaderSize(r, 64<<10)}
	format, err := c.uvarint()
	if err != nil {
		return err
	}
	if format != tenantsCheckpointFormat {
		return fmt.Errorf("registry: tenants checkpoint format %d, want %d", format, tenantsCheckpointFormat)
	}
	n, err := c.uvarint()
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
