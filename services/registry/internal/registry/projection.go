package registry

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/tidwall/btree"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Projection names; the suffix is the projection's version (bump it when the fold changes).
const (
	// AgentsProjectionName names the agents read model.
	AgentsProjectionName = "registry-agents-v3"
	// ActivityProjectionName names the agents' last-activity read model (fed by the monitor).
	ActivityProjectionName = "registry-activity-v1"
	// TenantsProjectionName names the tenants read model.
	TenantsProjectionName = "registry-tenants-v1"
)

// agentEntry is one agent in the read model: the agent as bytes (its last_active_time apart) and
// the fields the indexes and orders need.
type agentEntry struct {
	id          string
	key         idKey  // the first 16 bytes of id: the tie-break of every order without a pointer
	regSeq      uint64 // stream sequence of the registration: the create_time order
	data        []byte // deterministic protobuf of the agent, last_active_time unset
	displayName string
	expire      int64 // unix seconds; math.MaxInt64 when unset
	create      int64 // unix seconds
	lastActive  int64 // unix seconds (hour precision); 0 when never seen
	tier        int32
}

// activeOrCreate is what inactive_since compares: the last activity, or the registration when
// the agent was never seen.
func (e *agentEntry) activeOrCreate() int64 {
	if e.lastActive != 0 {
		return e.lastActive
	}
	return e.create
}

// idKey is the first 16 bytes of an agent id (zero-padded) as two big-endian numbers: comparing
// keys compares ids, except that equal keys need the whole ids.
type idKey struct{ hi, lo uint64 }

func keyOf(id string) idKey {
	var b [16]byte
	copy(b[:], id)
	return idKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// nameItem orders agents by agent id.
type nameItem struct {
	k   idKey
	ord uint32
}

// numItem orders agents by a number, then by agent id.
type numItem struct {
	num int64
	k   idKey
	ord uint32
}

// dispItem orders agents by display name, then by agent id.
type dispItem struct {
	disp string
	k    idKey
	ord  uint32
}

// tenantIndex is one tenant's agents with their indexes. Ordinals number the agents in
// registration order.
type tenantIndex struct {
	entries []agentEntry
	ords    map[string]uint32          // agent id → ordinal
	post    map[string]*roaring.Bitmap // posting lists of the equality filters (postingKeys)
	byName  *btree.BTreeG[nameItem]
	byDisp  *btree.BTreeG[dispItem]
	byExp   *btree.BTreeG[numItem]
	byAct   *btree.BTreeG[numItem] // last activity, 0 when never seen: the last_active_time order
	byIdle  *btree.BTreeG[numItem] // activeOrCreate: the inactive_since filter
	byTier  *btree.BTreeG[numItem]
	pending map[string]int64 // last activity of agents not registered (yet)
}

var treeOpts = btree.Options{NoLocks: true, Degree: 64}

func newTenantIndex() *tenantIndex {
	t := &tenantIndex{ords: map[string]uint32{}, post: map[string]*roaring.Bitmap{}, pending: map[string]int64{}}
	// less compares agent ids by their keys, by the ids themselves only when the keys are equal.
	less := func(a, b idKey, ao, bo uint32) bool {
		switch {
		case a.hi != b.hi:
			return a.hi < b.hi
		case a.lo != b.lo:
			return a.lo < b.lo
		case ao == bo:
			return false
		case ao == math.MaxUint32 || bo == math.MaxUint32: // a pivot above every agent of its number
			return bo == math.MaxUint32
		}
		return t.entries[ao].id < t.entries[bo].id
	}
	t.byName = btree.NewBTreeGOptions(func(a, b nameItem) bool { return less(a.k, b.k, a.ord, b.ord) }, treeOpts)
	t.byDisp = btree.NewBTreeGOptions(func(a, b dispItem) bool {
		if a.disp != b.disp {
			return a.disp < b.disp
		}
		return less(a.k, b.k, a.ord, b.ord)
	}, treeOpts)
	num := func(a, b numItem) bool {
		if a.num != b.num {
			return a.num < b.num
		}
		return less(a.k, b.k, a.ord, b.ord)
	}
	t.byExp = btree.NewBTreeGOptions(num, treeOpts)
	t.byAct = btree.NewBTreeGOptions(num, treeOpts)
	t.byIdle = btree.NewBTreeGOptions(num, treeOpts)
	t.byTier = btree.NewBTreeGOptions(num, treeOpts)
	return t
}

// Posting key prefixes.
const (
	postEnv      = "env:"
	postOwner    = "owner:"
	postSponsor  = "sponsor:"
	postTier     = "tier:"
	postState    = "state:"
	postSens     = "sens:"
	postLabelKey = "lk:"
	postLabel    = "lkv:"
	postScope    = "scope:"
	postOrphaned = "orphaned"
)

// postingKeys are the posting lists an agent belongs to.
func postingKeys(a *registryv1.Agent) []string {
	keys := make([]string, 0, 8+2*len(a.GetLabels())+len(a.GetScopes()))
	keys = append(keys,
		postEnv+strconv.Itoa(int(a.GetEnvironment())),
		postOwner+a.GetOwner(),
		postSponsor+a.GetSponsor(),
		postTier+strconv.Itoa(int(a.GetRiskTier())),
		postState+strconv.Itoa(int(a.GetState())),
		postSens+strconv.Itoa(int(a.GetDataSensitivity())),
	)
	for k, v := range a.GetLabels() {
		keys = append(keys, postLabelKey+k, postLabel+k+"="+v)
	}
	for _, s := range a.GetScopes() {
		keys = append(keys, postScope+s)
	}
	if a.GetOrphaned() {
		keys = append(keys, postOrphaned)
	}
	return keys
}

func (t *tenantIndex) addPost(key string, ord uint32) {
	b := t.post[key]
	if b == nil {
		b = roaring.New()
		t.post[key] = b
	}
	b.Add(ord)
}

func (t *tenantIndex) removePost(key string, ord uint32) {
	if b := t.post[key]; b != nil {
		b.Remove(ord)
		if b.IsEmpty() {
			delete(t.post, key)
		}
	}
}

func (t *tenantIndex) num(ord uint32, v int64) numItem {
	return numItem{v, t.entries[ord].key, ord}
}

// add sets the new entry ord from a and adds it to the indexes.
func (t *tenantIndex) add(ord uint32, a *registryv1.Agent, data []byte) {
	e := &t.entries[ord]
	e.key = keyOf(e.id)
	e.data = data
	e.displayName = a.GetDisplayName()
	e.expire = expireOf(a)
	e.create = a.GetCreateTime().GetSeconds()
	e.tier = int32(a.GetRiskTier())
	for _, k := range postingKeys(a) {
		t.addPost(k, ord)
	}
	t.byName.Set(nameItem{e.key, ord})
	t.byDisp.Set(dispItem{e.displayName, e.key, ord})
	t.byExp.Set(t.num(ord, e.expire))
	t.byTier.Set(t.num(ord, int64(e.tier)))
	t.byAct.Set(t.num(ord, 0))
	t.byIdle.Set(t.num(ord, e.create))
}

func expireOf(a *registryv1.Agent) int64 {
	if a.GetExpireTime() != nil {
		return a.GetExpireTime().GetSeconds()
	}
	return math.MaxInt64
}

// update changes entry ord (whose agent was prev) to next, touching only the indexes whose keys
// changed.
func (t *tenantIndex) update(ord uint32, prev, next *registryv1.Agent, data []byte) {
	e := &t.entries[ord]
	e.data = data
	old, cur := postingKeys(prev), postingKeys(next)
	for _, k := range old {
		if !slices.Contains(cur, k) {
			t.removePost(k, ord)
		}
	}
	for _, k := range cur {
		if !slices.Contains(old, k) {
			t.addPost(k, ord)
		}
	}
	if d := next.GetDisplayName(); d != e.displayName {
		t.byDisp.Delete(dispItem{e.displayName, e.key, ord})
		e.displayName = d
		t.byDisp.Set(dispItem{d, e.key, ord})
	}
	if x := expireOf(next); x != e.expire {
		t.byExp.Delete(t.num(ord, e.expire))
		e.expire = x
		t.byExp.Set(t.num(ord, x))
	}
	if r := int32(next.GetRiskTier()); r != e.tier {
		t.byTier.Delete(t.num(ord, int64(e.tier)))
		e.tier = r
		t.byTier.Set(t.num(ord, int64(r)))
	}
}

// setActive records activity at unix second at of ordinal ord (keeping the latest).
func (t *tenantIndex) setActive(ord uint32, at int64) {
	e := &t.entries[ord]
	if at <= e.lastActive {
		return
	}
	t.byAct.Delete(t.num(ord, e.lastActive))
	t.byIdle.Delete(t.num(ord, e.activeOrCreate()))
	e.lastActive = at
	t.byAct.Set(t.num(ord, at))
	t.byIdle.Set(t.num(ord, e.activeOrCreate()))
}

// AgentProjection is the in-memory read model of every tenant's agents, built by replaying the
// AGENTS stream, with the indexes of ListAgents; its Activity projection folds the monitor's
// activity events into last_active_time. It is safe for concurrent use; Apply is called by one
// Runner, Activity().Apply by another.
type AgentProjection struct {
	mu      sync.RWMutex
	tenants map[string]*tenantIndex
	keys    map[string]string // tenant + "/" + key thumbprint → agent id of every key ever held
	count   int
}

var (
	_ eventstore.Checkpointer = (*AgentProjection)(nil)
	_ eventstore.Checkpointer = (*ActivityProjection)(nil)
)

// NewAgentProjection returns an empty agents read model.
func NewAgentProjection() *AgentProjection {
	return &AgentProjection{tenants: map[string]*tenantIndex{}, keys: map[string]string{}}
}

// Name implements eventstore.Projection.
func (p *AgentProjection) Name() string { return AgentsProjectionName }

func (p *AgentProjection) tenant(id string) *tenantIndex {
	t := p.tenants[id]
	if t == nil {
		t = newTenantIndex()
		p.tenants[id] = t
	}
	return t
}

// decode returns the agent entry e holds (without last_active_time).
func decodeEntry(e *agentEntry) (*registryv1.Agent, error) {
	a := &registryv1.Agent{}
	if err := proto.Unmarshal(e.data, a); err != nil {
		return nil, fmt.Errorf("registry: read model entry of agent %s: %w", e.id, err)
	}
	return a, nil
}

// view returns the agent entry e holds, with its last_active_time.
func viewEntry(e *agentEntry) *registryv1.Agent {
	a, err := decodeEntry(e)
	if err != nil {
		return nil // entries are written by marshal: unreachable
	}
	if e.lastActive != 0 {
		a.LastActiveTime = &timestamppb.Timestamp{Seconds: e.lastActive}
	}
	return a
}

var marshalDet = proto.MarshalOptions{Deterministic: true}

// Apply implements eventstore.Projection: it folds one agent event into the read model. Events of
// other aggregate types are ignored.
func (p *AgentProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != AggregateAgent {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tenant(e.Metadata.Tenant)
	ord, exists := t.ords[e.AggregateID]
	var prev *registryv1.Agent
	if exists {
		var err error
		if prev, err = decodeEntry(&t.entries[ord]); err != nil {
			return err
		}
	}
	next, err := foldAgent(prev, e)
	if err != nil {
		return err
	}
	// Re-checked here, not only by the commands: an event appended around them (a leaked NATS
	// credential) must not register an agent under another tenant's name.
	if e.Type == EventAgentRegistered && next.GetName() != AgentName(e.Metadata.Tenant, e.AggregateID) {
		return eventstore.Permanent(fmt.Errorf("registry: registration %s refused: agent %q on aggregate %s/%s", e.ID, next.GetName(), e.Metadata.Tenant, e.AggregateID))
	}
	next.LastActiveTime = nil
	data, err := marshalDet.Marshal(next)
	if err != nil {
		return err
	}
	if !exists {
		ord = uint32(len(t.entries))
		t.entries = append(t.entries, agentEntry{id: e.AggregateID, regSeq: e.Sequence})
		t.ords[e.AggregateID] = ord
		p.count++
		t.add(ord, next, data)
		if at, ok := t.pending[e.AggregateID]; ok {
			delete(t.pending, e.AggregateID)
			t.setActive(ord, at)
		}
	} else {
		t.update(ord, prev, next, data)
	}
	for _, k := range next.GetKeys() {
		if _, seen := p.keys[e.Metadata.Tenant+"/"+k.GetThumbprint()]; !seen {
			p.keys[e.Metadata.Tenant+"/"+k.GetThumbprint()] = e.AggregateID
		}
	}
	return nil
}

// KeyHolder returns the id of the agent of tenant that first held the key with thumbprint
// (RFC 7638, base64url), whether or not it still does.
func (p *AgentProjection) KeyHolder(tenant, thumbprint string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	id, ok := p.keys[tenant+"/"+thumbprint]
	return id, ok
}

// Get returns a copy of one agent.
func (p *AgentProjection) Get(tenant, agentID string) (*registryv1.Agent, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tenants[tenant]
	if t == nil {
		return nil, false
	}
	ord, ok := t.ords[agentID]
	if !ok {
		return nil, false
	}
	a := viewEntry(&t.entries[ord])
	return a, a != nil
}

// Count returns the number of agents of every tenant.
func (p *AgentProjection) Count() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.count
}

// Each calls f with a copy of each agent of tenant in registration order until f returns false.
func (p *AgentProjection) Each(tenant string, f func(*registryv1.Agent) bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tenants[tenant]
	if t == nil {
		return
	}
	for i := range t.entries {
		if !f(viewEntry(&t.entries[i])) {
			return
		}
	}
}

// Snapshot returns copies of every agent of every tenant, ordered by registration.
func (p *AgentProjection) Snapshot() []*registryv1.Agent {
	p.mu.RLock()
	defer p.mu.RUnlock()
	type seqAgent struct {
		seq uint64
		a   *registryv1.Agent
	}
	all := make([]seqAgent, 0, p.count)
	for _, t := range p.tenants {
		for i := range t.entries {
			all = append(all, seqAgent{t.entries[i].regSeq, viewEntry(&t.entries[i])})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	out := make([]*registryv1.Agent, len(all))
	for i, s := range all {
		out[i] = s.a
	}
	return out
}

// Activity returns the projection that folds the monitor's activity events into the agents'
// last_active_time.
func (p *AgentProjection) Activity() *ActivityProjection { return &ActivityProjection{p: p} }

// ActivityProjection folds agent activity events (telemetry.<tenant>.agent.active, published by the
// monitor at most once per agent and hour) into the agents read model's last_active_time.
type ActivityProjection struct {
	p *AgentProjection
}

// Name implements eventstore.Projection.
func (a *ActivityProjection) Name() string { return ActivityProjectionName }

// Apply implements eventstore.Projection: it records the activity hour of the event's agent
// (keeping the latest). Other event types are ignored.
func (a *ActivityProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.Type != EventAgentActive {
		return nil
	}
	parts := strings.Split(e.Subject, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || parts[3] == "" || parts[1] != e.Metadata.Tenant {
		return eventstore.Permanent(fmt.Errorf("registry: activity event %s about %q of tenant %s: not an agent of its tenant", e.ID, e.Subject, e.Metadata.Tenant))
	}
	tenant, id := parts[1], parts[3]
	at, err := ActivityHour(e)
	if err != nil {
		return err
	}
	p := a.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setActive(tenant, id, at)
	return nil
}

// setActive records activity at unix second at of an agent, registered or not (yet); p.mu held.
func (p *AgentProjection) setActive(tenant, id string, at int64) {
	t := p.tenant(tenant)
	if ord, ok := t.ords[id]; ok {
		t.setActive(ord, at)
		return
	}
	if at > t.pending[id] {
		t.pending[id] = at
	}
}

// tenantEntry is one tenant in the read model with the sequence of its creation.
type tenantEntry struct {
	created uint64
	tenant  *registryv1.Tenant
}

// TenantProjection is the in-memory read model of the tenants, built by replaying the TENANTS
// stream. It is safe for concurrent use; Apply is called by one Runner.
type TenantProjection struct {
	mu    sync.RWMutex
	byID  map[string]*tenantEntry
	order []*tenantEntry // in creation order
}

var _ eventstore.Checkpointer = (*TenantProjection)(nil)

// NewTenantProjection returns an empty tenants read model.
func NewTenantProjection() *TenantProjection {
	return &TenantProjection{byID: map[string]*tenantEntry{}}
}

// Name implements eventstore.Projection.
func (p *TenantProjection) Name() string { return TenantsProjectionName }

// Apply implements eventstore.Projection: it folds one tenant event into the read model. Events of
// other aggregate types are ignored.
func (p *TenantProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != AggregateTenant {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.byID[e.AggregateID]
	var prev *registryv1.Tenant
	if cur != nil {
		prev = cur.tenant
	}
	next, err := foldTenant(prev, e)
	if err != nil {
		return err
	}
	// A tenant's events are its own: tenant, aggregate and created tenant are one id.
	if e.Type == EventTenantCreated && (e.AggregateID != e.Metadata.Tenant || next.GetTenantId() != e.AggregateID) {
		return eventstore.Permanent(fmt.Errorf("registry: tenant creation %s refused: tenant %q on aggregate %s of tenant %s", e.ID, next.GetTenantId(), e.AggregateID, e.Metadata.Tenant))
	}
	if cur == nil {
		cur = &tenantEntry{created: e.Sequence}
		p.byID[e.AggregateID] = cur
		p.order = append(p.order, cur)
	}
	cur.tenant = next
	return nil
}

// Get returns a copy of one tenant.
func (p *TenantProjection) Get(id string) (*registryv1.Tenant, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.byID[id]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(e.tenant), true
}

// List returns up to n tenants created after stream sequence after, in creation order, and the
// creation sequence of the last one returned if more follow (0 otherwise).
func (p *TenantProjection) List(after uint64, n int) ([]*registryv1.Tenant, uint64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	i := sort.Search(len(p.order), func(i int) bool { return p.order[i].created > after })
	end := min(i+n, len(p.order))
	out := make([]*registryv1.Tenant, 0, end-i)
	for _, e := range p.order[i:end] {
		out = append(out, proto.CloneOf(e.tenant))
	}
	if end < len(p.order) && end > i {
		return out, p.order[end-1].created
	}
	return out, 0
}

// Snapshot returns copies of every tenant in creation order.
func (p *TenantProjection) Snapshot() []*registryv1.Tenant {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*registryv1.Tenant, len(p.order))
	for i, e := range p.order {
		out[i] = proto.CloneOf(e.tenant)
	}
	return out
}

// OwnedOrSponsoredBy returns the ids of tenant's agents, not RETIRED or REJECTED, that principal
// owns or sponsors, in registration order, from the owner and sponsor indexes.
func (p *AgentProjection) OwnedOrSponsoredBy(tenant, principal string) []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tenants[tenant]
	if t == nil {
		return nil
	}
	set := roaring.New()
	for _, k := range []string{postOwner + principal, postSponsor + principal} {
		if b := t.post[k]; b != nil {
			set.Or(b)
		}
	}
	for _, st := range []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_RETIRED, registryv1.AgentState_AGENT_STATE_REJECTED} {
		if b := t.post[postState+strconv.Itoa(int(st))]; b != nil {
			set.AndNot(b)
		}
	}
	out := make([]string, 0, set.GetCardinality())
	it := set.Iterator()
	for it.HasNext() {
		out = append(out, t.entries[it.Next()].id)
	}
	return out
}
