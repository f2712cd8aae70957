package alerts

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// Page sizes of Store.List.
const (
	// DefaultPageSize is used when Query.PageSize is 0.
	DefaultPageSize = 100
	// MaxPageSize caps Query.PageSize.
	MaxPageSize = 1000
)

// DefaultMaxAlerts bounds the alerts a Store keeps per tenant; a tenant's oldest detected are
// evicted first, and one tenant's alerts never evict another's. 10,000 alerts take about 15 MB at
// most (20 event ids and a few evidence entries each); the ALERTS stream keeps them for 30 days, so
// a restart rebuilds the same set.
const DefaultMaxAlerts = 10_000

// Store keeps alerts queryable in memory: a bounded projection of the ALERTS stream, keyed by tenant
// and alert id, so an alert published twice is kept once. It is safe for concurrent use.
type Store struct {
	max int

	mu       sync.RWMutex
	byTenant map[string]*tenantAlerts
	total    int
}

// tenantAlerts are one tenant's alerts, sorted by detect time then alert id (oldest first).
type tenantAlerts struct {
	byID   map[string]*monitorv1.Alert
	sorted []*monitorv1.Alert
}

// NewStore returns an empty Store keeping at most maxPerTenant alerts of each tenant
// (DefaultMaxAlerts when <= 0).
func NewStore(maxPerTenant int) *Store {
	if maxPerTenant <= 0 {
		maxPerTenant = DefaultMaxAlerts
	}
	return &Store{max: maxPerTenant, byTenant: map[string]*tenantAlerts{}}
}

// less orders alerts by detect time, then alert id.
func less(a, b *monitorv1.Alert) int {
	ta, tb := detectMS(a), detectMS(b)
	switch {
	case ta < tb:
		return -1
	case ta > tb:
		return 1
	}
	return strings.Compare(a.GetAlertId(), b.GetAlertId())
}

func detectMS(a *monitorv1.Alert) int64 { return a.GetDetectTime().AsTime().UnixMilli() }

// Put stores a copy of alert; it reports false when the tenant already has an alert with that id
// (which is kept as it is) or the alert lacks a tenant or id. When the tenant then holds more than
// the bound, its oldest detected alert is evicted (possibly this one).
func (s *Store) Put(alert *monitorv1.Alert) bool {
	if alert.GetTenant() == "" || alert.GetAlertId() == "" {
		return false
	}
	a := proto.Clone(alert).(*monitorv1.Alert)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.byTenant[a.GetTenant()]
	if t == nil {
		t = &tenantAlerts{byID: map[string]*monitorv1.Alert{}}
		s.byTenant[a.GetTenant()] = t
	}
	if _, ok := t.byID[a.GetAlertId()]; ok {
		return false
	}
	i, _ := slices.BinarySearchFunc(t.sorted, a, less)
	t.sorted = slices.Insert(t.sorted, i, a)
	t.byID[a.GetAlertId()] = a
	s.total++
	for len(t.sorted) > s.max {
		delete(t.byID, t.sorted[0].GetAlertId())
		t.sorted[0] = nil
		t.sorted = t.sorted[1:]
		s.total--
	}
	return true
}

// Get returns a copy of the tenant's alert with id.
func (s *Store) Get(tenant, id string) (*monitorv1.Alert, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.byTenant[tenant]
	if t == nil {
		return nil, false
	}
	a, ok := t.byID[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(a).(*monitorv1.Alert), true
}

// Len returns how many alerts the store holds.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.total
}

// HasTenant reports whether the store holds an alert of tenant.
func (s *Store) HasTenant(tenant string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byTenant[tenant] != nil
}

// Query selects a tenant's alerts, newest first.
type Query struct {
	// Tenant is required.
	Tenant string
	// Agent, if set, keeps the alerts whose agent is exactly this.
	Agent string
	// Detector, if set, keeps one detector's alerts.
	Detector string
	// MinSeverity keeps alerts at least this severe (UNSPECIFIED: all).
	MinSeverity monitorv1.AlertSeverity
	// Start, if set, keeps alerts detected at or after it.
	Start time.Time
	// PageSize is 0 for DefaultPageSize; larger than MaxPageSize is lowered; negative is invalid.
	PageSize int
	// PageToken continues a List with the same filters.
	PageToken string
}

// pageToken is the content of a page token: the last alert returned and the filters it belongs to.
type pageToken struct {
	TimeMS  int64  `json:"t"`
	AlertID string `json:"id"`
	Filter  string `json:"f"`
}

func (q Query) filterHash() string {
	h := sha256.New()
	for _, s := range []string{q.Tenant, q.Agent, q.Detector, strconv.Itoa(int(q.MinSeverity))} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if !q.Start.IsZero() {
		h.Write([]byte(strconv.FormatInt(q.Start.UnixMilli(), 10)))
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:8])
}

// List returns one page of alerts matching q, ordered by detect time then alert id, both
// descending, and the next page's token ("" on the last page). Pages are stable: an alert added
// later never shifts the alerts of the following pages (it sorts before the token's position or is
// returned on a later page in its place). Bad input is InvalidArgument naming the field.
func (s *Store) List(q Query) ([]*monitorv1.Alert, string, error) {
	if q.Tenant == "" {
		return nil, "", errs.InvalidArgument("tenant", "tenant is required")
	}
	size := q.PageSize
	switch {
	case size < 0:
		return nil, "", errs.InvalidArgument("page_size", "page_size must not be negative")
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	var after *pageToken
	if q.PageToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.PageToken)
		var t pageToken
		if err != nil || json.Unmarshal(raw, &t) != nil || t.AlertID == "" {
			return nil, "", errs.InvalidArgument("page_token", "page_token is invalid; start again without it")
		}
		if t.Filter != q.filterHash() {
			return nil, "", errs.InvalidArgument("page_token", "page_token belongs to a query with other filters")
		}
		after = &t
	}
	startMS, hasStart := int64(0), !q.Start.IsZero()
	if hasStart {
		startMS = q.Start.UnixMilli()
		if q.Start.After(time.UnixMilli(startMS)) {
			startMS++
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.byTenant[q.Tenant]
	if t == nil {
		return nil, "", nil
	}
	i := len(t.sorted)
	if after != nil {
		// The first alert strictly before the cursor, in descending order.
		i, _ = slices.BinarySearchFunc(t.sorted, after, func(a *monitorv1.Alert, c *pageToken) int {
			if ms := detectMS(a); ms != c.TimeMS {
				if ms < c.TimeMS {
					return -1
				}
				return 1
			}
			return strings.Compare(a.GetAlertId(), c.AlertID)
		})
	}
	var out []*monitorv1.Alert
	for i--; i >= 0; i-- {
		a := t.sorted[i]
		if hasStart && detectMS(a) < startMS {
			break
		}
		if !q.matches(a) {
			continue
		}
		if len(out) == size {
			last := out[len(out)-1]
			b, _ := json.Marshal(pageToken{TimeMS: detectMS(last), AlertID: last.GetAlertId(), Filter: q.filterHash()})
			return out, base64.RawURLEncoding.EncodeToString(b), nil
		}
		out = append(out, proto.Clone(a).(*monitorv1.Alert))
	}
	return out, "", nil
}

func (q Query) matches(a *monitorv1.Alert) bool {
	return (q.Agent == "" || a.GetAgent() == q.Agent) &&
		(q.Detector == "" || a.GetDetector() == q.Detector) &&
		a.GetSeverity() >= q.MinSeverity
}
