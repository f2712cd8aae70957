package registry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// env is a registry service over an embedded NATS server with its read models running.
type env struct {
	store *eventstore.Store
	svc   *registry.Service
}

// admin is the metadata of commands in these tests.
var admin = eventstore.Metadata{Actor: eventstore.Actor{ID: "admin@corp.example", Kind: eventstore.ActorHuman}, CorrelationID: "test"}

func newEnv(t *testing.T, opts ...eventstore.Option) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), append([]eventstore.Option{eventstore.WithSource("agentid/registry")}, opts...)...)
	ctx := t.Context()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{store: store, svc: startService(t, store)}
	return e
}

// startService builds a service over store and runs its read models until the test ends.
func startService(t *testing.T, store *eventstore.Store) *registry.Service {
	t.Helper()
	svc, err := registry.New(registry.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, svc.Runners()...)
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer cancel()
	if err := svc.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return svc
}

// runAll runs runners until the test ends and checks that they stopped cleanly.
func runAll(t *testing.T, runners ...*eventstore.Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, len(runners))
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- r.Run(ctx)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Errorf("runner: %v", err)
			}
		}
	})
}

func (e *env) createTenant(t *testing.T, id string) {
	t.Helper()
	if _, err := e.svc.CreateTenant(t.Context(), registry.CreateTenant{TenantID: id, DisplayName: "Tenant " + id}, admin); err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
}

func (e *env) register(t *testing.T, tenant, requestID string) *registryv1.Agent {
	t.Helper()
	a, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: tenant, Agent: validAgent(t), RequestID: requestID}, admin)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return a
}

// eventTypes returns the types of an agent's stored events.
func (e *env) eventTypes(t *testing.T, tenant, agentID string) []string {
	t.Helper()
	evs, _, err := e.store.Load(t.Context(), tenant, registry.AggregateAgent, agentID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func TestRegisterAgentRefusesBadInputWithoutWriting(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)

	type tc struct {
		name   string
		cmd    registry.RegisterAgent
		kind   errs.Kind
		reason string
		field  string
	}
	var cases []tc
	for i, bad := range badAgentCases(t, time.Now()) {
		a := validAgent(t)
		bad.edit(a)
		cases = append(cases, tc{bad.name, registry.RegisterAgent{Tenant: "acme", Agent: a, RequestID: fmt.Sprintf("r-%d", i)}, errs.KindInvalidArgument, "INVALID_ARGUMENT", bad.field})
	}
	cases = append(cases,
		tc{"no agent", registry.RegisterAgent{Tenant: "acme"}, errs.KindInvalidArgument, "", "agent"},
		tc{"system tenant", registry.RegisterAgent{Tenant: "system", Agent: validAgent(t)}, errs.KindInvalidArgument, "", "parent"},
		tc{"malformed tenant", registry.RegisterAgent{Tenant: "A", Agent: validAgent(t)}, errs.KindInvalidArgument, "", "parent"},
		tc{"bad request id", registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: "has space"}, errs.KindInvalidArgument, "", "request_id"},
		tc{"unknown tenant", registry.RegisterAgent{Tenant: "nowhere", Agent: validAgent(t)}, errs.KindNotFound, "TENANT_NOT_FOUND", ""},
		tc{"owner registering for someone else", registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequireOwner: "mallory@corp.example"}, errs.KindPermissionDenied, "NOT_OWNER", ""},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := e.svc.RegisterAgent(t.Context(), c.cmd, admin)
			if a != nil {
				t.Fatalf("returned an agent: %v", a)
			}
			wantError(t, err, c.kind, c.reason, c.field)
		})
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before {
		t.Fatalf("AGENTS went from %d to %d messages on refused registrations", before, after)
	}
}

func TestAgentLifecycle(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()

	a := e.register(t, "acme", "")
	if a.GetState() != registryv1.AgentState_AGENT_STATE_PENDING || a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_LOW || a.GetEtag() == "" || a.GetCreateTime() == nil {
		t.Fatalf("registered agent: %v", a)
	}
	if a.GetName() != registry.AgentName("acme", a.GetAgentId()) || !registry.ValidAgentID(a.GetAgentId()) {
		t.Fatalf("name %s id %s", a.GetName(), a.GetAgentId())
	}
	id := a.GetAgentId()

	_, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: id, DecisionID: "d1", ApprovedBy: "policy:auto", Etag: "999"}, admin)
	wantError(t, err, errs.KindConflict, "ETAG_MISMATCH", "")
	_, err = e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: id, ApprovedBy: "policy:auto"}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "decision_id")

	act, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: id, DecisionID: "d1", ApprovedBy: "policy:auto", Etag: a.GetEtag()}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if act.GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE || act.GetEtag() == a.GetEtag() {
		t.Fatalf("activated: %v", act)
	}
	again, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: id, DecisionID: "d1", ApprovedBy: "policy:auto"}, admin)
	if err != nil || !proto.Equal(again, act) {
		t.Fatalf("repeated activation: %v %v", again, err)
	}

	ret, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "project finished", Ticket: "CHG-7", RequestID: "retire-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if ret.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING || ret.GetStateReason() != "project finished" {
		t.Fatalf("retiring: %v", ret)
	}
	// A retried retirement with the same request id returns the agent and records nothing new.
	ret2, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "project finished", RequestID: "retire-1"}, admin)
	if err != nil || ret2.GetEtag() != ret.GetEtag() {
		t.Fatalf("retried retirement: %v %v", ret2, err)
	}
	_, err = e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "again", RequestID: "retire-2"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_RETIRING", "")

	done, err := e.svc.CompleteRetirement(ctx, registry.CompleteRetirement{Tenant: "acme", AgentID: id, RequestID: "c1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if done.GetState() != registryv1.AgentState_AGENT_STATE_RETIRED {
		t.Fatalf("retired: %v", done)
	}
	want := []string{registry.EventAgentRegistered, registry.EventAgentActivated, registry.EventAgentRetirementRequested, registry.EventAgentRetired}
	if got := e.eventTypes(t, "acme", id); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}

	evs, _, err := e.store.Load(ctx, "acme", registry.AggregateAgent, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Metadata.Actor != admin.Actor || ev.Metadata.CorrelationID != "test" || ev.Subject != a.GetName() || ev.Source != "agentid/registry" {
			t.Fatalf("event envelope %+v", ev)
		}
	}

	_, err = e.svc.GetAgent(ctx, "acme", registry.NewAgentID(), 0)
	wantError(t, err, errs.KindNotFound, "AGENT_NOT_FOUND", "")
	_, err = e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: registry.NewAgentID(), DecisionID: "d", ApprovedBy: "x"}, admin)
	wantError(t, err, errs.KindNotFound, "AGENT_NOT_FOUND", "")
}

func TestRejectAgent(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.register(t, "acme", "r1")
	rej, err := e.svc.RejectAgent(t.Context(), registry.RejectAgent{Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "d9", Reason: "PII without DPA"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if rej.GetState() != registryv1.AgentState_AGENT_STATE_REJECTED || rej.GetStateReason() != "PII without DPA" {
		t.Fatalf("rejected: %v", rej)
	}
	_, err = e.svc.ActivateAgent(t.Context(), registry.ActivateAgent{Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "d10", ApprovedBy: "x"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_REJECTED", "")
}

func TestRegisterAgentIsIdempotent(t *testing.T) {
	// A one-second duplicate window shows that idempotency does not depend on the stream's window.
	e := newEnv(t, eventstore.WithDuplicateWindow(time.Second))
	e.createTenant(t, "acme")
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)

	in := validAgent(t)
	register := func(requestID string) *registryv1.Agent {
		t.Helper()
		a, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: proto.CloneOf(in), RequestID: requestID}, admin)
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		return a
	}
	first := register("req-42")
	second := register("req-42")
	if !proto.Equal(first, second) {
		t.Fatalf("second registration differs:\n%v\n%v", first, second)
	}
	if first.GetAgentId() != registry.DeriveAgentID("acme", "req-42") {
		t.Fatalf("agent id %s is not derived from the request id", first.GetAgentId())
	}
	time.Sleep(1500 * time.Millisecond)
	third := register("req-42")
	if third.GetAgentId() != first.GetAgentId() {
		t.Fatalf("registration after the duplicate window created %s", third.GetAgentId())
	}
	other := e.register(t, "acme", "req-43")
	if other.GetAgentId() == first.GetAgentId() {
		t.Fatal("a different request id returned the same agent")
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents); after != before+2 {
		t.Fatalf("AGENTS grew by %d, want 2", after-before)
	}
}

func TestConcurrentRetirementsRecordOneEvent(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	a := e.register(t, "acme", "")
	id := a.GetAgentId()

	const n = 8
	var wg sync.WaitGroup
	errsOut := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errsOut[i] = e.svc.RetireAgent(context.Background(), registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: fmt.Sprintf("r%d", i), RequestID: fmt.Sprintf("ret-%d", i)}, admin)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errsOut {
		switch {
		case err == nil:
			ok++
		case errs.Is(err, errs.KindFailedPrecondition), errs.Is(err, errs.KindConflict):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d retirements succeeded, want exactly 1 (%v)", ok, errsOut)
	}
	want := []string{registry.EventAgentRegistered, registry.EventAgentRetirementRequested}
	if got := e.eventTypes(t, "acme", id); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func TestTenants(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	before := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants)
	for _, c := range []struct {
		name  string
		cmd   registry.CreateTenant
		field string
	}{
		{"reserved system", registry.CreateTenant{TenantID: "system"}, "tenant_id"},
		{"uppercase", registry.CreateTenant{TenantID: "Acme"}, "tenant_id"},
		{"too short", registry.CreateTenant{TenantID: "a"}, "tenant_id"},
		{"leading digit", registry.CreateTenant{TenantID: "1acme"}, "tenant_id"},
		{"dot", registry.CreateTenant{TenantID: "ac.me"}, "tenant_id"},
		{"long display name", registry.CreateTenant{TenantID: "acme", DisplayName: string(make([]byte, 300))}, "display_name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.svc.CreateTenant(ctx, c.cmd, admin)
			wantError(t, err, errs.KindInvalidArgument, "", c.field)
		})
	}
	if after := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants); after != before {
		t.Fatalf("TENANTS grew on refused creations")
	}

	t1, err := e.svc.CreateTenant(ctx, registry.CreateTenant{TenantID: "acme", DisplayName: "Acme Corp", RequestID: "ct-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if t1.GetName() != "tenants/acme" || t1.GetDisplayName() != "Acme Corp" || t1.GetCreateTime() == nil {
		t.Fatalf("tenant %v", t1)
	}
	t2, err := e.svc.CreateTenant(ctx, registry.CreateTenant{TenantID: "acme", DisplayName: "Acme Corp", RequestID: "ct-1"}, admin)
	if err != nil || !proto.Equal(t1, t2) {
		t.Fatalf("repeated creation: %v %v", t2, err)
	}
	_, err = e.svc.CreateTenant(ctx, registry.CreateTenant{TenantID: "acme", RequestID: "ct-2"}, admin)
	wantError(t, err, errs.KindAlreadyExists, "TENANT_EXISTS", "")

	for range 2 {
		if err := e.svc.EnsureTenant(ctx, "default", "Default", admin); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.svc.EnsureTenant(ctx, "acme", "other", admin); err != nil {
		t.Fatalf("ensure of an existing tenant: %v", err)
	}
	if got := testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamTenants); got != before+2 {
		t.Fatalf("TENANTS has %d new messages, want 2", got-before)
	}
	got, err := e.svc.GetTenant(ctx, "default")
	if err != nil || got.GetDisplayName() != "Default" {
		t.Fatalf("get default: %v %v", got, err)
	}
	_, err = e.svc.GetTenant(ctx, "nowhere")
	wantError(t, err, errs.KindNotFound, "TENANT_NOT_FOUND", "")
	list, next, err := e.svc.ListTenants(ctx, 0, "")
	if err != nil || len(list) != 2 || next != "" || list[0].GetTenantId() != "acme" || list[1].GetTenantId() != "default" {
		t.Fatalf("list: %v %q %v", list, next, err)
	}
}

func TestListAgentsPaging(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	e.createTenant(t, "globex")
	var want []string
	for i := range 7 {
		want = append(want, e.register(t, "acme", fmt.Sprintf("req-%d", i)).GetAgentId())
		e.register(t, "globex", fmt.Sprintf("req-%d", i)) // interleaved, never listed for acme
	}
	ctx := t.Context()

	var got []string
	token := ""
	pages := 0
	for {
		page, next, err := listAgents(ctx, e.svc, "acme", 3, token)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, a := range page {
			if a.GetTenant() != "acme" {
				t.Fatalf("listed %s of tenant %s", a.GetName(), a.GetTenant())
			}
			got = append(got, a.GetAgentId())
		}
		if next == "" {
			break
		}
		token = next
	}
	if pages != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%d pages %v, want 3 pages %v", pages, got, want)
	}

	all, next, err := listAgents(ctx, e.svc, "acme", 0, "")
	if err != nil || len(all) != 7 || next != "" {
		t.Fatalf("default page: %d agents, next %q, %v", len(all), next, err)
	}
	for _, tok := range []string{"%%%", "AAAA", "AAAAAAAAAAA"} {
		_, _, err := listAgents(ctx, e.svc, "acme", 0, tok)
		wantError(t, err, errs.KindInvalidArgument, "", "page_token")
	}
	_, _, err = listAgents(ctx, e.svc, "acme", -1, "")
	wantError(t, err, errs.KindInvalidArgument, "", "page_size")
	_, _, err = listAgents(ctx, e.svc, "nowhere", 0, "")
	wantError(t, err, errs.KindNotFound, "TENANT_NOT_FOUND", "")
}

func TestProjectionRebuildEqualsLive(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.createTenant(t, "acme")
	e.createTenant(t, "globex")
	for i := range 6 {
		tenant := []string{"acme", "globex"}[i%2]
		a := e.register(t, tenant, fmt.Sprintf("r%d", i))
		id := a.GetAgentId()
		switch i % 3 {
		case 0:
			if _, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: tenant, AgentID: id, DecisionID: "d", ApprovedBy: "policy:auto"}, admin); err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: tenant, AgentID: id, Reason: "done"}, admin); err != nil {
				t.Fatal(err)
			}
		case 1:
			if _, err := e.svc.RejectAgent(ctx, registry.RejectAgent{Tenant: tenant, AgentID: id, DecisionID: "d", Reason: "no"}, admin); err != nil {
				t.Fatal(err)
			}
		}
	}

	agents, tenants := registry.NewAgentProjection(), registry.NewTenantProjection()
	ar := e.store.NewRunner(agents, eventstore.StreamAgents, nil)
	tr := e.store.NewRunner(tenants, eventstore.StreamTenants, nil)
	runAll(t, ar, tr)
	rctx, cancel := context.WithTimeout(ctx, testkit.DefaultWait)
	defer cancel()
	for _, r := range []*eventstore.Runner{ar, tr} {
		if err := r.Ready(rctx); err != nil {
			t.Fatal(err)
		}
	}
	live, rebuilt := e.svc.Agents().Snapshot(), agents.Snapshot()
	if len(live) != 6 || len(rebuilt) != len(live) {
		t.Fatalf("live %d agents, rebuilt %d", len(live), len(rebuilt))
	}
	for i := range live {
		if !proto.Equal(live[i], rebuilt[i]) {
			t.Fatalf("agent %d differs:\nlive    %v\nrebuilt %v", i, live[i], rebuilt[i])
		}
	}
	lt, rt := e.svc.Tenants().Snapshot(), tenants.Snapshot()
	if len(lt) != 2 || len(rt) != 2 || !proto.Equal(lt[0], rt[0]) || !proto.Equal(lt[1], rt[1]) {
		t.Fatalf("tenants differ: %v vs %v", lt, rt)
	}

	// A second replica replays the same streams and answers the same queries.
	replica := startService(t, e.store)
	for _, tenant := range []string{"acme", "globex"} {
		a, _, err := listAgents(ctx, e.svc, tenant, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := listAgents(ctx, replica, tenant, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(a) != 3 || len(b) != 3 {
			t.Fatalf("%s: %d vs %d agents", tenant, len(a), len(b))
		}
		for i := range a {
			if !proto.Equal(a[i], b[i]) {
				t.Fatalf("%s agent %d differs on the replica", tenant, i)
			}
		}
	}
	failed, err := e.store.FailedEvents(ctx)
	if err != nil || len(failed) != 0 {
		t.Fatalf("failed events %v %v", failed, err)
	}
}

func TestCommandsAfterStoreOutageAreUnavailable(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, store)
	n.Shutdown()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := svc.CreateTenant(ctx, registry.CreateTenant{TenantID: "acme"}, admin)
	if err == nil {
		t.Fatal("created a tenant without an event store")
	}
	if k := errs.KindOf(err); k != errs.KindUnavailable && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v (kind %s), want Unavailable or the caller's deadline", err, k)
	}
}
