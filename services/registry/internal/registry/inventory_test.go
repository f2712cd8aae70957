package registry_test

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// inventory feeds a projection with events of consecutive stream sequences.
type inventory struct {
	t   *testing.T
	p   *registry.AgentProjection
	seq uint64
}

func (inv *inventory) apply(tenant, id string, ch registry.Change, at time.Time) {
	inv.t.Helper()
	inv.seq++
	data, err := proto.Marshal(ch.Data)
	if err != nil {
		inv.t.Fatal(err)
	}
	ev := eventstore.Event{
		ID: fmt.Sprintf("ev-%d", inv.seq), Type: ch.Type, Time: at,
		Metadata:      eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "tester", Kind: eventstore.ActorHuman}},
		AggregateType: registry.AggregateAgent, AggregateID: id, Stream: eventstore.StreamAgents, Sequence: inv.seq,
		DataSchema: string(ch.Data.ProtoReflect().Descriptor().FullName()), Data: data,
	}
	if err := inv.p.Apply(inv.t.Context(), ev); err != nil {
		inv.t.Fatalf("apply %s to %s: %v", ch.Type, id, err)
	}
}

func (inv *inventory) active(tenant, id string, hour time.Time) {
	inv.t.Helper()
	data, _ := proto.Marshal(&monitorv1.HourlyActivity{Hour: timestamppb.New(hour)})
	ev := eventstore.Event{
		ID: "act-" + id, Type: registry.EventAgentActive, Subject: registry.AgentName(tenant, id),
		Metadata: eventstore.Metadata{Tenant: tenant}, Data: data, DataSchema: "agentid.monitor.v1.HourlyActivity",
	}
	if err := inv.p.Activity().Apply(inv.t.Context(), ev); err != nil {
		inv.t.Fatal(err)
	}
}

var invT0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// seedInventory registers n agents of acme (and a few of globex) with varied fields.
func seedInventory(t *testing.T, n int) *inventory {
	inv := &inventory{t: t, p: registry.NewAgentProjection()}
	jwks := ecJWKS(t)
	envs := []registryv1.Environment{registryv1.Environment_ENVIRONMENT_DEV, registryv1.Environment_ENVIRONMENT_STAGING, registryv1.Environment_ENVIRONMENT_PROD}
	tiers := []registryv1.RiskTier{registryv1.RiskTier_RISK_TIER_LOW, registryv1.RiskTier_RISK_TIER_MODERATE, registryv1.RiskTier_RISK_TIER_HIGH}
	sens := []registryv1.DataSensitivity{registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC, registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL, registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL}
	for i := range n {
		id := fmt.Sprintf("ag%07d", (i*7919)%idSpace(n)) // ids not in registration order
		a := &registryv1.Agent{
			Name: registry.AgentName("acme", id), AgentId: id, Tenant: "acme",
			DisplayName:     fmt.Sprintf("bot %d", i%13),
			Owner:           fmt.Sprintf("team:t%d", i%5),
			Sponsor:         fmt.Sprintf("s%d@corp.example", i%3),
			Environment:     envs[i%3],
			RiskTier:        tiers[(i/2)%3],
			DataSensitivity: sens[i%3],
			Scopes:          []string{"faq.read", fmt.Sprintf("x%d.write", i%4)},
			PublicJwks:      jwks,
			Labels:          map[string]string{"app": fmt.Sprintf("a%d", i%6)},
		}
		if i%4 == 0 {
			a.Labels["team"] = "blue"
		}
		if i%5 != 0 {
			a.ExpireTime = timestamppb.New(invT0.Add(time.Duration(i%17) * 24 * time.Hour))
		}
		at := invT0.Add(time.Duration(i) * time.Minute)
		inv.apply("acme", id, registry.AgentRegistered(a), at)
		if i%2 == 0 {
			inv.apply("acme", id, registry.AgentActivated(a.Name, "d", "policy:auto"), at)
		}
		if i%10 == 0 {
			inv.apply("acme", id, registry.AgentSuspended(a.Name, "why", "operator", ""), at)
		}
		if i%3 == 0 {
			inv.active("acme", id, invT0.Add(time.Duration(i%48)*time.Hour))
		}
		if i%50 == 0 {
			g := proto.CloneOf(a)
			g.Name, g.Tenant = registry.AgentName("globex", id), "globex"
			inv.apply("globex", id, registry.AgentRegistered(g), at)
		}
	}
	inv.active("acme", "ag-later", invT0) // activity before registration
	return inv
}

// idSpace is a modulus coprime with 7919 and at least n, so that i*7919 mod it is unique.
func idSpace(n int) int {
	if n <= 10_000 {
		return 10_000
	}
	return 10_000_000
}

// matches is the brute-force reference of the filters of req.
func matches(a *registryv1.Agent, req *registryv1.ListAgentsRequest) bool {
	in := func(v int32, vals []int32) bool { return len(vals) == 0 || slices.Contains(vals, v) }
	if !in(int32(a.GetEnvironment()), enum32(req.GetEnvironments())) || !in(int32(a.GetRiskTier()), enum32(req.GetRiskTiers())) ||
		!in(int32(a.GetState()), enum32(req.GetStates())) || !in(int32(a.GetDataSensitivity()), enum32(req.GetDataSensitivities())) {
		return false
	}
	if req.GetOwner() != "" && a.GetOwner() != req.GetOwner() || req.GetSponsor() != "" && a.GetSponsor() != req.GetSponsor() {
		return false
	}
	if req.GetScope() != "" && !slices.Contains(a.GetScopes(), req.GetScope()) {
		return false
	}
	if req.Orphaned != nil && a.GetOrphaned() != req.GetOrphaned() {
		return false
	}
	if eb := req.GetExpireBefore(); eb != nil && (a.GetExpireTime() == nil || !a.GetExpireTime().AsTime().Before(eb.AsTime())) {
		return false
	}
	if is := req.GetInactiveSince(); is != nil {
		last := a.GetLastActiveTime()
		if last == nil {
			last = a.GetCreateTime()
		}
		if !last.AsTime().Before(is.AsTime()) {
			return false
		}
	}
	for _, s := range req.GetLabelSelectors() {
		switch {
		case strings.HasPrefix(s, "!"):
			if _, ok := a.GetLabels()[s[1:]]; ok {
				return false
			}
		case strings.Contains(s, "!="):
			k, v, _ := strings.Cut(s, "!=")
			if a.GetLabels()[k] == v {
				if _, ok := a.GetLabels()[k]; ok {
					return false
				}
			}
		case strings.Contains(s, "="):
			k, v, _ := strings.Cut(s, "=")
			if got, ok := a.GetLabels()[k]; !ok || got != v {
				return false
			}
		default:
			if _, ok := a.GetLabels()[s]; !ok {
				return false
			}
		}
	}
	return true
}

func enum32[E ~int32](in []E) []int32 {
	out := make([]int32, len(in))
	for i, v := range in {
		out[i] = int32(v)
	}
	return out
}

// orderCmp is the brute-force reference of order_by (ties by agent id; desc reverses both).
func orderCmp(order string) func(a, b *registryv1.Agent) int {
	key, desc, _ := strings.Cut(order, " ")
	secs := func(ts *timestamppb.Timestamp, unset int64) int64 {
		if ts == nil {
			return unset
		}
		return ts.GetSeconds()
	}
	return func(a, b *registryv1.Agent) int {
		var r int
		switch key {
		case "", "create_time":
			r = 0 // registration order: the snapshot's order, kept by a stable sort
		case "name":
			r = cmp.Compare(a.GetAgentId(), b.GetAgentId())
		case "display_name":
			r = cmp.Or(cmp.Compare(a.GetDisplayName(), b.GetDisplayName()), cmp.Compare(a.GetAgentId(), b.GetAgentId()))
		case "expire_time":
			r = cmp.Or(cmp.Compare(secs(a.GetExpireTime(), 1<<62), secs(b.GetExpireTime(), 1<<62)), cmp.Compare(a.GetAgentId(), b.GetAgentId()))
		case "last_active_time":
			r = cmp.Or(cmp.Compare(secs(a.GetLastActiveTime(), 0), secs(b.GetLastActiveTime(), 0)), cmp.Compare(a.GetAgentId(), b.GetAgentId()))
		case "risk_tier":
			r = cmp.Or(cmp.Compare(a.GetRiskTier(), b.GetRiskTier()), cmp.Compare(a.GetAgentId(), b.GetAgentId()))
		}
		if desc == "desc" {
			return -r
		}
		return r
	}
}

// listAll pages through the projection with page size size.
func listPages(t *testing.T, p *registry.AgentProjection, req *registryv1.ListAgentsRequest, size int32) ([]string, int64) {
	t.Helper()
	var ids []string
	var total int64 = -1
	req = proto.CloneOf(req)
	req.PageSize = size
	for pages := 0; ; pages++ {
		q, err := registry.ParseAgentQuery("acme", req)
		if err != nil {
			t.Fatal(err)
		}
		page, err := p.List(q)
		if err != nil {
			t.Fatal(err)
		}
		if total >= 0 && page.TotalSize != total {
			t.Fatalf("total_size changed from %d to %d between pages", total, page.TotalSize)
		}
		total = page.TotalSize
		if len(page.Agents) > int(size) {
			t.Fatalf("page of %d agents, size %d", len(page.Agents), size)
		}
		for _, a := range page.Agents {
			ids = append(ids, a.GetAgentId())
		}
		if page.NextPageToken == "" {
			return ids, total
		}
		if pages > 1000 {
			t.Fatal("the listing does not end")
		}
		req.PageToken = page.NextPageToken
	}
}

func TestListAgentsFiltersAndOrders(t *testing.T) {
	inv := seedInventory(t, 400)
	var acme []*registryv1.Agent
	for _, a := range inv.p.Snapshot() {
		if a.GetTenant() == "acme" {
			acme = append(acme, a)
		}
	}
	orphaned, notOrphaned := true, false
	filters := []struct {
		name string
		req  *registryv1.ListAgentsRequest
	}{
		{"none", &registryv1.ListAgentsRequest{}},
		{"environment", &registryv1.ListAgentsRequest{Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_PROD}}},
		{"environments or", &registryv1.ListAgentsRequest{Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_PROD, registryv1.Environment_ENVIRONMENT_DEV}}},
		{"owner", &registryv1.ListAgentsRequest{Owner: "team:t3"}},
		{"owner and sponsor", &registryv1.ListAgentsRequest{Owner: "team:t3", Sponsor: "s1@corp.example"}},
		{"unknown owner", &registryv1.ListAgentsRequest{Owner: "nobody"}},
		{"tiers and states", &registryv1.ListAgentsRequest{
			RiskTiers: []registryv1.RiskTier{registryv1.RiskTier_RISK_TIER_HIGH, registryv1.RiskTier_RISK_TIER_LOW},
			States:    []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED}}},
		{"sensitivity", &registryv1.ListAgentsRequest{DataSensitivities: []registryv1.DataSensitivity{registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL}}},
		{"labels", &registryv1.ListAgentsRequest{LabelSelectors: []string{"app=a1", "team"}}},
		{"label negations", &registryv1.ListAgentsRequest{LabelSelectors: []string{"app!=a2", "!team"}}},
		{"orphaned", &registryv1.ListAgentsRequest{Orphaned: &orphaned}},
		{"not orphaned", &registryv1.ListAgentsRequest{Orphaned: &notOrphaned, Owner: "team:t1"}},
		{"expire before", &registryv1.ListAgentsRequest{ExpireBefore: timestamppb.New(invT0.Add(5 * 24 * time.Hour))}},
		{"inactive since", &registryv1.ListAgentsRequest{InactiveSince: timestamppb.New(invT0.Add(3 * time.Hour))}},
		{"scope", &registryv1.ListAgentsRequest{Scope: "x2.write"}},
		{"expire before and inactive since", &registryv1.ListAgentsRequest{ExpireBefore: timestamppb.New(invT0.Add(9 * 24 * time.Hour)),
			InactiveSince: timestamppb.New(invT0.Add(40 * time.Hour))}},
		{"expire before and owner", &registryv1.ListAgentsRequest{ExpireBefore: timestamppb.New(invT0.Add(9 * 24 * time.Hour)), Owner: "team:t2"}},
		{"mix", &registryv1.ListAgentsRequest{Scope: "faq.read", Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_STAGING},
			LabelSelectors: []string{"app"}, InactiveSince: timestamppb.New(invT0.Add(40 * time.Hour))}},
	}
	orders := []string{"", "create_time desc", "name", "name desc", "display_name", "display_name desc", "expire_time", "expire_time desc",
		"last_active_time", "last_active_time desc", "risk_tier", "risk_tier desc"}
	for _, f := range filters {
		for _, order := range orders {
			t.Run(f.name+"/"+order, func(t *testing.T) {
				var want []*registryv1.Agent
				for _, a := range acme {
					if matches(a, f.req) {
						want = append(want, a)
					}
				}
				c := orderCmp(order)
				if strings.HasPrefix(order, "create_time desc") {
					slices.Reverse(want)
				} else {
					slices.SortStableFunc(want, c)
				}
				wantIDs := make([]string, len(want))
				for i, a := range want {
					wantIDs[i] = a.GetAgentId()
				}
				req := proto.CloneOf(f.req)
				req.OrderBy = order
				for _, size := range []int32{7, 1000} {
					req.ShowTotalSize = size == 1000 // without a total, some filters take other paths
					got, total := listPages(t, inv.p, req, size)
					if !slices.Equal(got, wantIDs) {
						t.Fatalf("page size %d:\n got %v\nwant %v", size, got, wantIDs)
					}
					if req.ShowTotalSize && total != int64(len(wantIDs)) {
						t.Fatalf("total_size %d, want %d", total, len(wantIDs))
					}
				}
			})
		}
	}
}

func TestListAgentsLastActive(t *testing.T) {
	inv := seedInventory(t, 30)
	a, ok := inv.p.Get("acme", "ag0000000")
	if !ok || !a.GetLastActiveTime().AsTime().Equal(invT0) {
		t.Fatalf("last_active_time of ag0000 = %v", a.GetLastActiveTime())
	}
	inv.active("acme", "ag0000000", invT0.Add(-time.Hour)) // older: ignored
	inv.active("acme", "ag0000000", invT0.Add(5*time.Hour+17*time.Minute))
	a, _ = inv.p.Get("acme", "ag0000000")
	if want := invT0.Add(5 * time.Hour); !a.GetLastActiveTime().AsTime().Equal(want) {
		t.Fatalf("last_active_time = %v, want the hour %v", a.GetLastActiveTime().AsTime(), want)
	}
}

func TestListAgentsBadRequests(t *testing.T) {
	inv := seedInventory(t, 20)
	q, err := registry.ParseAgentQuery("acme", &registryv1.ListAgentsRequest{PageSize: 2, Owner: "team:t1"})
	if err != nil {
		t.Fatal(err)
	}
	page, err := inv.p.List(q)
	if err != nil || page.NextPageToken == "" {
		t.Fatalf("first page: %v, token %q", err, page.NextPageToken)
	}
	tests := []struct {
		name    string
		req     *registryv1.ListAgentsRequest
		field   string
		message string
	}{
		{"token of other filters", &registryv1.ListAgentsRequest{PageToken: page.NextPageToken, Owner: "team:t2"}, "page_token", "other filters"},
		{"token of another order", &registryv1.ListAgentsRequest{PageToken: page.NextPageToken, Owner: "team:t1", OrderBy: "name"}, "page_token", "other filters"},
		{"garbage token", &registryv1.ListAgentsRequest{PageToken: "%%%"}, "page_token", "not a token"},
		{"bad selector", &registryv1.ListAgentsRequest{LabelSelectors: []string{"app", "team=blue", "a=b=c"}}, "label_selectors[2]", `label_selectors[2]: "a=b=c" is not key=value`},
		{"bad label key", &registryv1.ListAgentsRequest{LabelSelectors: []string{"App=x"}}, "label_selectors[0]", "label key"},
		{"bad order", &registryv1.ListAgentsRequest{OrderBy: "owner"}, "order_by", "want one of"},
		{"bad direction", &registryv1.ListAgentsRequest{OrderBy: "name up"}, "order_by", "desc"},
		{"unspecified enum", &registryv1.ListAgentsRequest{States: []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_ACTIVE, 0}}, "states[1]", "UNSPECIFIED"},
		{"negative size", &registryv1.ListAgentsRequest{PageSize: -1}, "page_size", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := registry.ParseAgentQuery("acme", tt.req)
			if err == nil {
				_, err = inv.p.List(q)
			}
			wantError(t, err, errs.KindInvalidArgument, "", tt.field)
			if !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("error %q does not say %q", err, tt.message)
			}
		})
	}
}

func TestAgentProjectionCheckpointRoundTrip(t *testing.T) {
	inv := seedInventory(t, 200)
	restored := registry.NewAgentProjection()
	for _, pair := range []struct {
		from, to interface {
			Checkpoint() func(w io.Writer) error
			Restore(r io.Reader) error
		}
	}{{inv.p, restored}, {inv.p.Activity(), restored.Activity()}} {
		var buf bytes.Buffer
		if err := pair.from.Checkpoint()(&buf); err != nil {
			t.Fatal(err)
		}
		if err := pair.to.Restore(&buf); err != nil {
			t.Fatal(err)
		}
	}
	snap := func(p *registry.AgentProjection) []byte {
		var out []byte
		for _, a := range p.Snapshot() {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		}
		return out
	}
	if !bytes.Equal(snap(inv.p), snap(restored)) {
		t.Fatal("the restored read model differs from the original")
	}
	for _, order := range []string{"", "display_name desc", "last_active_time"} {
		req := &registryv1.ListAgentsRequest{OrderBy: order, LabelSelectors: []string{"app=a1"}}
		a, _ := listPages(t, inv.p, req, 5)
		b, _ := listPages(t, restored, req, 5)
		if !slices.Equal(a, b) {
			t.Fatalf("order %q: restored lists %v, original %v", order, b, a)
		}
	}
	if holder, ok := restored.KeyHolder("acme", "none"); ok {
		t.Fatalf("key holder of an unknown key: %s", holder)
	}
	// Activity recorded before the agent registers is kept for it.
	inv.apply("acme", "ag-later", registry.AgentRegistered(&registryv1.Agent{
		Name: registry.AgentName("acme", "ag-later"), AgentId: "ag-later", Tenant: "acme", Owner: "o", Sponsor: "s", PublicJwks: ecJWKS(t),
	}), invT0)
	if a, _ := inv.p.Get("acme", "ag-later"); !a.GetLastActiveTime().AsTime().Equal(invT0) {
		t.Fatalf("last_active_time of an agent active before its registration = %v", a.GetLastActiveTime())
	}
}
