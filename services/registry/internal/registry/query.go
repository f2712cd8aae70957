package registry

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/tidwall/btree"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Order keys of ListAgents.
const (
	OrderCreateTime     = "create_time"
	OrderName           = "name"
	OrderDisplayName    = "display_name"
	OrderExpireTime     = "expire_time"
	OrderLastActiveTime = "last_active_time"
	OrderRiskTier       = "risk_tier"
)

var orderKeys = []string{OrderCreateTime, OrderName, OrderDisplayName, OrderExpireTime, OrderLastActiveTime, OrderRiskTier}

// labelSelector is one parsed label selector.
type labelSelector struct {
	key, value string
	op         byte // '=' key=value, '!' key!=value, 'h' has key, 'n' has not key
}

// AgentQuery is a validated ListAgents request.
type AgentQuery struct {
	// Tenant whose agents are listed.
	Tenant string
	size   int
	token  string

	environments  []int32
	owner         string
	sponsor       string
	tiers         []int32
	states        []int32
	sensitivities []int32
	labels        []labelSelector
	orphaned      *bool
	expireBefore  int64 // unix seconds; 0: no filter
	inactiveSince int64 // unix seconds; 0: no filter
	scope         string
	order         string
	desc          bool
	total         bool
}

// ParseAgentQuery validates a ListAgents request of tenant. Errors name the field and the rule.
func ParseAgentQuery(tenant string, req *registryv1.ListAgentsRequest) (AgentQuery, error) {
	q := AgentQuery{Tenant: tenant, token: req.GetPageToken(), owner: req.GetOwner(), sponsor: req.GetSponsor(),
		scope: req.GetScope(), total: req.GetShowTotalSize()}
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return q, err
	}
	q.size = n
	enums := func(field string, vals []int32, names map[int32]string) ([]int32, error) {
		for i, v := range vals {
			if _, ok := names[v]; !ok || v == 0 {
				return nil, invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%d is not a value of the enum (UNSPECIFIED is not allowed)", v))
			}
		}
		out := slices.Clone(vals)
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	if q.environments, err = enums("environments", enumVals(req.GetEnvironments()), registryv1.Environment_name); err != nil {
		return q, err
	}
	if q.tiers, err = enums("risk_tiers", enumVals(req.GetRiskTiers()), registryv1.RiskTier_name); err != nil {
		return q, err
	}
	if q.states, err = enums("states", enumVals(req.GetStates()), registryv1.AgentState_name); err != nil {
		return q, err
	}
	if q.sensitivities, err = enums("data_sensitivities", enumVals(req.GetDataSensitivities()), registryv1.DataSensitivity_name); err != nil {
		return q, err
	}
	for _, f := range []struct{ name, v string }{{"owner", q.owner}, {"sponsor", q.sponsor}, {"scope", q.scope}} {
		if len(f.v) > 256 || strings.ContainsAny(f.v, " \t\r\n") {
			return q, invalid(f.name, "must be at most 256 characters without spaces")
		}
	}
	for i, s := range req.GetLabelSelectors() {
		sel, err := parseLabelSelector(s)
		if err != nil {
			return q, invalid(fmt.Sprintf("label_selectors[%d]", i), fmt.Sprintf("%q %s", printable(s), err.Error()))
		}
		q.labels = append(q.labels, sel)
	}
	if req.Orphaned != nil {
		o := req.GetOrphaned()
		q.orphaned = &o
	}
	if ts := req.GetExpireBefore(); ts != nil {
		if ts.CheckValid() != nil {
			return q, invalid("expire_before", "is not a valid timestamp")
		}
		q.expireBefore = ts.GetSeconds()
		if ts.GetNanos() > 0 {
			q.expireBefore++ // expire_time < t, compared in whole seconds
		}
	}
	if ts := req.GetInactiveSince(); ts != nil {
		if ts.CheckValid() != nil {
			return q, invalid("inactive_since", "is not a valid timestamp")
		}
		q.inactiveSince = ts.GetSeconds()
		if ts.GetNanos() > 0 {
			q.inactiveSince++
		}
	}
	if q.order, q.desc, err = parseOrderBy(req.GetOrderBy()); err != nil {
		return q, err
	}
	return q, nil
}

func enumVals[E ~int32](in []E) []int32 {
	out := make([]int32, len(in))
	for i, v := range in {
		out[i] = int32(v)
	}
	return out
}

// parseOrderBy parses `key` or `key desc` (or `key asc`).
func parseOrderBy(s string) (string, bool, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return OrderCreateTime, false, nil
	}
	bad := invalid("order_by", fmt.Sprintf("%q: want one of %s, optionally followed by \" desc\"", printable(s), strings.Join(orderKeys, ", ")))
	if len(f) > 2 || !slices.Contains(orderKeys, f[0]) {
		return "", false, bad
	}
	if len(f) == 2 {
		switch strings.ToLower(f[1]) {
		case "desc":
			return f[0], true, nil
		case "asc":
		default:
			return "", false, bad
		}
	}
	return f[0], false, nil
}

// parseLabelSelector parses `key=value`, `key!=value`, `key` or `!key`; the error completes
// "<selector> ...".
func parseLabelSelector(s string) (labelSelector, error) {
	checkKey := func(k string) error {
		if !validLabelPart(k) {
			return fmt.Errorf("has the label key %q: keys are 1 to 63 lowercase letters, digits, '-', '_', '.', '/'", k)
		}
		return nil
	}
	switch {
	case strings.HasPrefix(s, "!") && !strings.Contains(s, "="):
		k := s[1:]
		return labelSelector{key: k, op: 'n'}, checkKey(k)
	case strings.Contains(s, "="):
		sep, op := "=", byte('=')
		if strings.Contains(s, "!=") {
			sep, op = "!=", '!'
		}
		k, v, _ := strings.Cut(s, sep)
		if strings.Contains(v, "=") {
			return labelSelector{}, fmt.Errorf("is not key=value, key!=value, key or !key")
		}
		if err := checkKey(k); err != nil {
			return labelSelector{}, err
		}
		if v != "" && !validLabelPart(v) {
			return labelSelector{}, fmt.Errorf("has the label value %q: values are at most 63 lowercase letters, digits, '-', '_', '.', '/'", v)
		}
		return labelSelector{key: k, value: v, op: op}, nil
	}
	return labelSelector{key: s, op: 'h'}, checkKey(s)
}

func validLabelPart(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/') {
			return false
		}
	}
	return true
}

// filterHash binds a page token to the filters and order of the query that issued it.
func (q *AgentQuery) filterHash() [8]byte {
	h := sha256.New()
	w := func(parts ...string) {
		for _, p := range parts {
			h.Write([]byte(strconv.Itoa(len(p))))
			h.Write([]byte{':'})
			h.Write([]byte(p))
		}
	}
	ints := func(vs []int32) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = strconv.Itoa(int(v))
		}
		return strings.Join(s, ",")
	}
	w(q.Tenant, ints(q.environments), q.owner, q.sponsor, ints(q.tiers), ints(q.states), ints(q.sensitivities), q.scope, q.order,
		strconv.FormatBool(q.desc), strconv.FormatInt(q.expireBefore, 10), strconv.FormatInt(q.inactiveSince, 10))
	if q.orphaned != nil {
		w("orphaned", strconv.FormatBool(*q.orphaned))
	}
	for _, l := range q.labels {
		w(string(l.op), l.key, l.value)
	}
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}

// cursor is where a page continues: after the agent id with order key num (or str).
type cursor struct {
	num int64
	str string
	id  string
}

const tokenVersion = 2

func (q *AgentQuery) encodeToken(c cursor) string {
	h := q.filterHash()
	b := []byte{tokenVersion}
	b = append(b, h[:]...)
	b = binary.AppendVarint(b, c.num)
	b = binary.AppendUvarint(b, uint64(len(c.str)))
	b = append(b, c.str...)
	b = append(b, c.id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (q *AgentQuery) decodeToken() (*cursor, error) {
	if q.token == "" {
		return nil, nil
	}
	bad := invalid("page_token", "is not a token returned by this service")
	b, err := base64.RawURLEncoding.DecodeString(q.token)
	if err != nil || len(b) < 10 || b[0] != tokenVersion {
		return nil, bad
	}
	h := q.filterHash()
	if string(b[1:9]) != string(h[:]) {
		return nil, invalid("page_token", "was issued for other filters or another order_by: repeat the request that returned it, or start without a page_token")
	}
	b = b[9:]
	num, k := binary.Varint(b)
	if k <= 0 {
		return nil, bad
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, bad
	}
	c := &cursor{num: num, str: string(b[k : k+int(n)]), id: string(b[k+int(n):])}
	if c.id == "" {
		return nil, bad
	}
	return c, nil
}

// AgentPage is one page of ListAgents.
type AgentPage struct {
	// Agents are the page's agents.
	Agents []*registryv1.Agent
	// NextPageToken continues the listing; empty on the last page.
	NextPageToken string
	// TotalSize counts every matching agent when the query asked for it.
	TotalSize int64
}

// smallSet is the size under which a candidate set is sorted instead of walking an order index.
const smallSet = 16384

// List answers q from the read model.
func (p *AgentProjection) List(q AgentQuery) (AgentPage, error) {
	cur, err := q.decodeToken()
	if err != nil {
		return AgentPage{}, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tenants[q.Tenant]
	if t == nil || len(t.entries) == 0 {
		return AgentPage{}, nil
	}
	if cur != nil {
		if _, ok := t.ords[cur.id]; !ok {
			return AgentPage{}, invalid("page_token", "is not a token returned by this service")
		}
	}
	cand := t.candidates(&q)
	var page AgentPage
	var ords []uint32
	if cand != nil && cand.GetCardinality() <= smallSet {
		ords = t.sortedPage(&q, cand, cur)
	} else {
		ords = t.walkPage(&q, cand, cur)
	}
	if len(ords) > q.size {
		ords = ords[:q.size]
		page.NextPageToken = q.encodeToken(t.cursorOf(&q, ords[len(ords)-1]))
	}
	page.Agents = make([]*registryv1.Agent, 0, len(ords))
	for _, o := range ords {
		if a := viewEntry(&t.entries[o]); a != nil {
			page.Agents = append(page.Agents, a)
		}
	}
	if q.total {
		if cand == nil {
			page.TotalSize = int64(len(t.entries))
		} else {
			page.TotalSize = int64(cand.GetCardinality())
		}
	}
	return page, nil
}

// candidates is the set of agents the filters allow, nil for every agent. The set may be a
// posting list itself: it is read, never changed.
func (t *tenantIndex) candidates(q *AgentQuery) *roaring.Bitmap {
	var cand *roaring.Bitmap
	owned := false // cand is this query's own (not a posting list)
	empty := false
	and := func(b *roaring.Bitmap) {
		switch {
		case empty:
		case b == nil || b.IsEmpty():
			empty = true
		case cand == nil:
			cand = b
		case !owned:
			cand, owned = roaring.And(cand, b), true
		default:
			cand.And(b)
		}
	}
	andNot := func(b *roaring.Bitmap) {
		switch {
		case empty || b == nil:
		case cand == nil:
			cand = roaring.New()
			cand.AddRange(0, uint64(len(t.entries)))
			cand.AndNot(b)
			owned = true
		case !owned:
			cand, owned = roaring.AndNot(cand, b), true
		default:
			cand.AndNot(b)
		}
	}
	anyOf := func(prefix string, vals []int32) {
		if len(vals) == 0 {
			return
		}
		bs := make([]*roaring.Bitmap, 0, len(vals))
		for _, v := range vals {
			if b := t.post[prefix+strconv.Itoa(int(v))]; b != nil {
				bs = append(bs, b)
			}
		}
		switch len(bs) {
		case 0:
			and(nil)
		case 1:
			and(bs[0])
		default:
			and(roaring.FastOr(bs...))
		}
	}
	// Most selective first keeps the intermediate sets small.
	if q.owner != "" {
		and(t.post[postOwner+q.owner])
	}
	if q.sponsor != "" {
		and(t.post[postSponsor+q.sponsor])
	}
	if q.scope != "" {
		and(t.post[postScope+q.scope])
	}
	for _, l := range q.labels {
		switch l.op {
		case '=':
			and(t.post[postLabel+l.key+"="+l.value])
		case 'h':
			and(t.post[postLabelKey+l.key])
		}
	}
	anyOf(postState, q.states)
	anyOf(postTier, q.tiers)
	anyOf(postSens, q.sensitivities)
	anyOf(postEnv, q.environments)
	if q.orphaned != nil {
		if *q.orphaned {
			and(t.post[postOrphaned])
		} else {
			andNot(t.post[postOrphaned])
		}
	}
	for _, l := range q.labels {
		switch l.op {
		case '!':
			andNot(t.post[postLabel+l.key+"="+l.value])
		case 'n':
			andNot(t.post[postLabelKey+l.key])
		}
	}
	// Walking the expire_time order from the bound applies expire_before by itself; the set is
	// built only when it is needed (another order, or a total).
	if q.expireBefore != 0 && (q.order != OrderExpireTime || q.total || cand != nil || q.inactiveSince != 0) {
		and(t.below(t.byExp, q.expireBefore))
	}
	if q.inactiveSince != 0 {
		and(t.below(t.byIdle, q.inactiveSince))
	}
	if empty {
		return roaring.New()
	}
	return cand
}

// below is the set of the agents whose number in tree is less than bound, built by walking the
// smaller side of bound (the tree's counts find it).
func (t *tenantIndex) below(tree *btree.BTreeG[numItem], bound int64) *roaring.Bitmap {
	n := tree.Len()
	k := sortSearch(n, func(i int) bool { it, _ := tree.GetAt(i); return it.num >= bound })
	if k == 0 {
		return nil
	}
	words := make([]uint64, (len(t.entries)+63)/64)
	if k <= n-k {
		tree.Scan(func(it numItem) bool {
			if it.num >= bound {
				return false
			}
			words[it.ord>>6] |= 1 << (it.ord & 63)
			return true
		})
	} else {
		for i := range words {
			words[i] = ^uint64(0)
		}
		if r := uint(len(t.entries)) & 63; r != 0 {
			words[len(words)-1] = 1<<r - 1
		}
		tree.Reverse(func(it numItem) bool {
			if it.num < bound {
				return false
			}
			words[it.ord>>6] &^= 1 << (it.ord & 63)
			return true
		})
	}
	return roaring.FromDense(words, false)
}

// cursorOf is the cursor after ordinal o in q's order.
func (t *tenantIndex) cursorOf(q *AgentQuery, o uint32) cursor {
	e := &t.entries[o]
	c := cursor{id: e.id}
	switch q.order {
	case OrderCreateTime:
		c.num = int64(e.regSeq)
	case OrderDisplayName:
		c.str = e.displayName
	case OrderExpireTime:
		c.num = e.expire
	case OrderLastActiveTime:
		c.num = e.lastActive
	case OrderRiskTier:
		c.num = int64(e.tier)
	}
	return c
}

// sortKey is an agent's position in an order: number or string, then agent id.
type sortKey struct {
	num int64
	str string
	k   idKey
	ord uint32
}

func (t *tenantIndex) sortKeyOf(q *AgentQuery, o uint32) sortKey {
	c := t.cursorOf(q, o)
	return sortKey{c.num, c.str, t.entries[o].key, o}
}

func (t *tenantIndex) cmpKeys(a, b sortKey) int {
	switch {
	case a.num != b.num:
		if a.num < b.num {
			return -1
		}
		return 1
	case a.str != b.str:
		return strings.Compare(a.str, b.str)
	case a.k.hi != b.k.hi:
		if a.k.hi < b.k.hi {
			return -1
		}
		return 1
	case a.k.lo != b.k.lo:
		if a.k.lo < b.k.lo {
			return -1
		}
		return 1
	case a.ord == b.ord:
		return 0
	}
	return strings.Compare(t.entries[a.ord].id, t.entries[b.ord].id)
}

// cmpCursor compares the order key of k with c (ties by agent id), ascending.
func (t *tenantIndex) cmpCursor(k sortKey, c cursor) int {
	switch {
	case k.num != c.num:
		if k.num < c.num {
			return -1
		}
		return 1
	case k.str != c.str:
		return strings.Compare(k.str, c.str)
	}
	return strings.Compare(t.entries[k.ord].id, c.id)
}

// sortedPage sorts the agents of a small candidate set after cur and returns up to size+1 of them.
func (t *tenantIndex) sortedPage(q *AgentQuery, cand *roaring.Bitmap, cur *cursor) []uint32 {
	keys := make([]sortKey, 0, cand.GetCardinality())
	it := cand.Iterator()
	for it.HasNext() {
		k := t.sortKeyOf(q, it.Next())
		if cur != nil {
			r := t.cmpCursor(k, *cur)
			if q.desc {
				r = -r
			}
			if r <= 0 {
				continue
			}
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b sortKey) int {
		if q.desc {
			return t.cmpKeys(b, a)
		}
		return t.cmpKeys(a, b)
	})
	keys = keys[:min(q.size+1, len(keys))]
	out := make([]uint32, len(keys))
	for i, k := range keys {
		out[i] = k.ord
	}
	return out
}

// walkPage walks q's order index from cur and returns up to size+1 agents of cand (nil: all).
func (t *tenantIndex) walkPage(q *AgentQuery, cand *roaring.Bitmap, cur *cursor) []uint32 {
	out := make([]uint32, 0, q.size+1)
	take := func(o uint32) bool {
		if cand == nil || cand.Contains(o) {
			out = append(out, o)
		}
		return len(out) <= q.size
	}
	skip := func(o uint32) bool { return cur != nil && t.entries[o].id == cur.id }
	var pivotOrd uint32
	var pivotKey idKey
	if cur != nil {
		pivotOrd = t.ords[cur.id]
		pivotKey = t.entries[pivotOrd].key
	}
	n := uint32(len(t.entries))
	switch q.order {
	case OrderCreateTime:
		if !q.desc {
			start := uint32(0)
			if cur != nil {
				start = uint32(sortSearch(int(n), func(i int) bool { return t.entries[i].regSeq > uint64(cur.num) }))
			}
			for o := start; o < n; o++ {
				if !take(o) {
					break
				}
			}
		} else {
			end := int64(n) - 1
			if cur != nil {
				end = int64(sortSearch(int(n), func(i int) bool { return t.entries[i].regSeq >= uint64(cur.num) })) - 1
			}
			for o := end; o >= 0; o-- {
				if !take(uint32(o)) {
					break
				}
			}
		}
	case OrderName:
		iter := func(it nameItem) bool { return skip(it.ord) || take(it.ord) }
		switch {
		case cur == nil && !q.desc:
			t.byName.Scan(iter)
		case cur == nil:
			t.byName.Reverse(iter)
		case !q.desc:
			t.byName.Ascend(nameItem{pivotKey, pivotOrd}, iter)
		default:
			t.byName.Descend(nameItem{pivotKey, pivotOrd}, iter)
		}
	case OrderDisplayName:
		iter := func(d dispItem) bool { return (cur != nil && d.disp == cur.str && skip(d.ord)) || take(d.ord) }
		switch {
		case cur == nil && !q.desc:
			t.byDisp.Scan(iter)
		case cur == nil:
			t.byDisp.Reverse(iter)
		case !q.desc:
			t.byDisp.Ascend(dispItem{cur.str, pivotKey, pivotOrd}, iter)
		default:
			t.byDisp.Descend(dispItem{cur.str, pivotKey, pivotOrd}, iter)
		}
	default:
		tree := t.byExp
		// An upper bound of the order key that the filters imply: a descending walk starts there
		// rather than walking past every agent above it.
		var top int64 = math.MaxInt64
		switch q.order {
		case OrderExpireTime:
			if q.expireBefore != 0 {
				top = q.expireBefore - 1
			}
		case OrderLastActiveTime:
			tree = t.byAct
			if q.inactiveSince != 0 {
				top = q.inactiveSince - 1
			}
		case OrderRiskTier:
			tree = t.byTier
		}
		iter := func(d numItem) bool {
			if !q.desc && d.num > top {
				return false
			}
			return (cur != nil && d.num == cur.num && skip(d.ord)) || take(d.ord)
		}
		switch {
		case cur == nil && !q.desc:
			tree.Scan(iter)
		case cur == nil && top == math.MaxInt64:
			tree.Reverse(iter)
		case cur == nil:
			tree.Descend(numItem{top, idKey{math.MaxUint64, math.MaxUint64}, math.MaxUint32}, iter)
		case !q.desc:
			tree.Ascend(numItem{cur.num, pivotKey, pivotOrd}, iter)
		default:
			tree.Descend(numItem{cur.num, pivotKey, pivotOrd}, iter)
		}
	}
	return out
}

func sortSearch(n int, f func(int) bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(m) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
