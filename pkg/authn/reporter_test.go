package authn_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// fakeMonitor implements MonitorService.RecordAccess, storing each batch once by batch_id.
type fakeMonitor struct {
	monitorv1.UnimplementedMonitorServiceServer

	mu       sync.Mutex
	calls    []*monitorv1.RecordAccessRequest
	stored   map[string]*monitorv1.RecordAccessRequest
	failNext []error       // errors for the next calls, in order
	gate     chan struct{} // when set, calls wait for it to be closed
	entered  chan struct{} // receives one value per call entering
}

func (m *fakeMonitor) RecordAccess(ctx context.Context, req *monitorv1.RecordAccessRequest) (*monitorv1.RecordAccessResponse, error) {
	m.mu.Lock()
	m.calls = append(m.calls, req)
	gate, entered := m.gate, m.entered
	var fail error
	if len(m.failNext) > 0 {
		fail, m.failNext = m.failNext[0], m.failNext[1:]
	}
	m.mu.Unlock()
	if entered != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.stored[req.GetBatchId()]; !dup {
		m.stored[req.GetBatchId()] = req
	}
	return &monitorv1.RecordAccessResponse{Accepted: int32(len(req.GetEvents()))}, nil
}

// totals returns the events and dropped counts stored, per tenant.
func (m *fakeMonitor) totals() (events, dropped map[string]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	events, dropped = map[string]int64{}, map[string]int64{}
	for _, b := range m.stored {
		tenant := b.GetParent()[len("tenants/"):]
		events[tenant] += int64(len(b.GetEvents()))
		dropped[tenant] += b.GetDropped()
	}
	return events, dropped
}

func (m *fakeMonitor) callsSnapshot() []*monitorv1.RecordAccessRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*monitorv1.RecordAccessRequest(nil), m.calls...)
}

func startMonitor(t testing.TB, m *fakeMonitor) *grpc.ClientConn {
	t.Helper()
	m.stored = map[string]*monitorv1.RecordAccessRequest{}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	monitorv1.RegisterMonitorServiceServer(srv, m)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func newReporter(t *testing.T, conn *grpc.ClientConn, mut func(*authn.AccessReporterConfig)) *authn.AccessReporter {
	t.Helper()
	cfg := authn.AccessReporterConfig{Tenant: "acme", Conn: conn, FlushInterval: 20 * time.Millisecond,
		RetryBackoff: time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	r, err := authn.NewAccessReporter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
		defer cancel()
		_ = r.Close(ctx)
	})
	return r
}

func accessEvent(i int, tenant string) authn.AccessEvent {
	return authn.AccessEvent{Time: time.Now(), Tenant: tenant, ClientID: "c1", Resource: fmt.Sprintf("/files/%d", i),
		Action: "GET", Allowed: true, Status: 200, RequestID: fmt.Sprintf("r-%d", i), Latency: time.Millisecond}
}

func TestAccessReporterBatchesByTenant(t *testing.T) {
	m := &fakeMonitor{}
	r := newReporter(t, startMonitor(t, m), func(c *authn.AccessReporterConfig) {
		c.QueueSize, c.OtherTenants = 2000, []string{"globex"}
	})
	for i := range 1200 {
		r.Record(accessEvent(i, "acme"))
	}
	r.Record(accessEvent(1200, "globex"))
	r.Record(authn.AccessEvent{Reason: authn.ReasonTokenMissing, Status: 401}) // no token: the reporter's tenant
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	events, dropped := m.totals()
	if events["acme"] != 1201 || events["globex"] != 1 || dropped["acme"] != 0 {
		t.Errorf("stored events %v dropped %v, want acme 1201, globex 1, nothing dropped", events, dropped)
	}
	for _, b := range m.callsSnapshot() {
		if n := len(b.GetEvents()); n > authn.DefaultAccessBatchSize {
			t.Errorf("batch %s has %d events, more than %d", b.GetBatchId(), n, authn.DefaultAccessBatchSize)
		}
		for _, ev := range b.GetEvents() {
			if ev.GetEventId() == "" || ev.GetTenant() != b.GetParent()[len("tenants/"):] || ev.GetTime() == nil {
				t.Fatalf("event %v of batch %s lacks an id, its batch's tenant or a time", ev, b.GetParent())
			}
		}
	}
	if s := r.Stats(); s.Queued != 1202 || s.Sent != 1202 || s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("stats %+v, want 1202 queued and sent", s)
	}
}

func TestAccessReporterRetriesWithTheSameBatchID(t *testing.T) {
	m := &fakeMonitor{failNext: []error{
		status.Error(codes.Unavailable, "monitor restarting"),
		status.Error(codes.Unavailable, "monitor restarting"),
	}}
	r := newReporter(t, startMonitor(t, m), nil)
	for i := range 3 {
		r.Record(accessEvent(i, "acme"))
	}
	testkit.Eventually(t, 0, "the batch to be stored", func() (bool, error) { return r.Stats().Sent == 3, nil })
	calls := m.callsSnapshot()
	if len(calls) < 3 {
		t.Fatalf("%d calls, want 2 failures and a success", len(calls))
	}
	ids := map[string]bool{}
	for _, c := range calls[:3] {
		ids[c.GetBatchId()] = true
		if len(c.GetEvents()) != 3 || c.GetEvents()[0].GetEventId() != calls[0].GetEvents()[0].GetEventId() {
			t.Errorf("retry carries %d events, first id %s; want the same 3 events", len(c.GetEvents()), c.GetEvents()[0].GetEventId())
		}
	}
	if len(ids) != 1 {
		t.Errorf("batch ids %v across retries, want one", ids)
	}
}

func TestAccessReporterNeverBlocksAndCountsDrops(t *testing.T) {
	m := &fakeMonitor{gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	r := newReporter(t, startMonitor(t, m), func(c *authn.AccessReporterConfig) { c.QueueSize = 2; c.BatchSize = 1 })
	r.Record(accessEvent(0, "acme"))
	select { // the loop is now stuck in a call the monitor does not answer
	case <-m.entered:
	case <-time.After(testkit.DefaultWait):
		t.Fatal("the first batch never reached the monitor")
	}
	for i := 1; i <= 10; i++ {
		r.Record(accessEvent(i, "acme")) // must return at once: 2 are queued, 8 dropped
	}
	if s := r.Stats(); s.Dropped != 8 || s.Queued != 3 {
		t.Fatalf("stats %+v with a stuck monitor, want 3 queued and 8 dropped", s)
	}
	m.mu.Lock()
	gate := m.gate
	m.gate, m.entered = nil, nil
	m.mu.Unlock()
	close(gate)
	testkit.Eventually(t, 0, "queued events and the drop count to reach the monitor", func() (bool, error) {
		events, dropped := m.totals()
		return events["acme"] == 3 && dropped["acme"] == 8, fmt.Errorf("events %v dropped %v", events, dropped)
	})
}

func TestAccessReporterRejectedBatchIsCountedAsLost(t *testing.T) {
	m := &fakeMonitor{failNext: []error{status.Error(codes.InvalidArgument, "events[0].tenant")}}
	r := newReporter(t, startMonitor(t, m), func(c *authn.AccessReporterConfig) { c.BatchSize = 2 })
	r.Record(accessEvent(0, "acme"))
	r.Record(accessEvent(1, "acme"))
	testkit.Eventually(t, 0, "the rejected batch to be counted", func() (bool, error) { return r.Stats().Failed == 2, nil })
	r.Record(accessEvent(2, "acme"))
	testkit.Eventually(t, 0, "the loss to be reported", func() (bool, error) {
		events, dropped := m.totals()
		return events["acme"] == 1 && dropped["acme"] == 2, fmt.Errorf("events %v dropped %v", events, dropped)
	})
	if n := len(m.callsSnapshot()); n < 2 {
		t.Errorf("%d calls", n)
	}
	first := m.callsSnapshot()[0]
	for _, c := range m.callsSnapshot()[1:] {
		if c.GetBatchId() == first.GetBatchId() {
			t.Errorf("a batch the monitor rejected as invalid was retried")
		}
	}
}

func TestAccessReporterCloseGivesUpAtItsDeadline(t *testing.T) {
	m := &fakeMonitor{gate: make(chan struct{})}
	r := newReporter(t, startMonitor(t, m), nil)
	r.Record(accessEvent(0, "acme"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); err == nil {
		t.Fatal("Close returned nil although the monitor never stored the events")
	}
	r.Record(accessEvent(1, "acme")) // after Close: dropped, not blocked, no panic
	if s := r.Stats(); s.Sent != 0 || s.Dropped == 0 {
		t.Errorf("stats %+v, want nothing sent and the late event dropped", s)
	}
}

func TestNewAccessReporterValidates(t *testing.T) {
	conn := startMonitor(t, &fakeMonitor{})
	for name, cfg := range map[string]authn.AccessReporterConfig{
		"no tenant":       {Conn: conn},
		"no connection":   {Tenant: "acme"},
		"batch too large": {Tenant: "acme", Conn: conn, BatchSize: authn.MaxAccessBatchSize + 1},
	} {
		if _, err := authn.NewAccessReporter(cfg); err == nil {
			t.Errorf("%s: NewAccessReporter accepted the config", name)
		}
	}
}

// TestAccessReporterForeignTenantGoesToItsOwnTenant: an event of a verified token of a tenant the
// reporter may not report for (a resource server of acme refusing a globex token) is recorded in the
// reporter's own tenant as TENANT_NOT_ALLOWED without the foreign identifiers, so the monitor takes
// it and no batch goes to the foreign tenant.
func TestAccessReporterForeignTenantGoesToItsOwnTenant(t *testing.T) {
	m := &fakeMonitor{}
	r := newReporter(t, startMonitor(t, m), nil)
	ev := accessEvent(0, "globex")
	ev.Agent, ev.Subject, ev.OnBehalfOf, ev.Environment, ev.TokenID = "tenants/globex/agents/a1", "s1", "u1", "prod", "jti-1"
	ev.Scopes, ev.Allowed, ev.Status, ev.Reason = []string{"files.read"}, false, 401, authn.ReasonTenantNotAllowed
	r.Record(ev)
	testkit.Eventually(t, 0, "the event to be stored", func() (bool, error) { return r.Stats().Sent == 1, nil })
	for _, b := range m.callsSnapshot() {
		if b.GetParent() != "tenants/acme" {
			t.Fatalf("a batch went to %s, want only tenants/acme", b.GetParent())
		}
	}
	got := m.callsSnapshot()[0].GetEvents()[0]
	if got.GetTenant() != "acme" || got.GetReason() != authn.ReasonTenantNotAllowed || got.GetResource() != "/files/0" {
		t.Errorf("event tenant %q reason %q resource %q, want acme, %s, /files/0", got.GetTenant(), got.GetReason(), got.GetResource(), authn.ReasonTenantNotAllowed)
	}
	if got.GetAgent() != "" || got.GetClientId() != "" || got.GetSubject() != "" || got.GetOnBehalfOf() != "" ||
		got.GetEnvironment() != "" || got.GetTokenId() != "" || len(got.GetScopes()) != 0 {
		t.Errorf("event keeps the foreign token's identifiers: %v", got)
	}
}

// TestAccessReporterRefusedTenantIsNotRetriedForever: a batch the monitor refuses with
// PermissionDenied or NotFound is counted as failed once; no count of it goes back to that tenant,
// so the reporter does not send empty batches there on every flush.
func TestAccessReporterRefusedTenantIsNotRetriedForever(t *testing.T) {
	for _, code := range []codes.Code{codes.PermissionDenied, codes.NotFound} {
		t.Run(code.String(), func(t *testing.T) {
			m := &fakeMonitor{failNext: []error{status.Error(code, "not your tenant")}}
			r := newReporter(t, startMonitor(t, m), func(c *authn.AccessReporterConfig) { c.OtherTenants = []string{"globex"} })
			r.Record(accessEvent(0, "globex"))
			testkit.Eventually(t, 0, "the refused batch to be counted", func() (bool, error) { return r.Stats().Failed == 1, nil })
			// Later events of the reporter's own tenant are sent, and flush after flush nothing more
			// goes to globex.
			for i := 1; i <= 3; i++ {
				r.Record(accessEvent(i, "acme"))
				want := int64(i)
				testkit.Eventually(t, 0, "an acme event to be stored", func() (bool, error) { return r.Stats().Sent == want, nil })
			}
			ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
			defer cancel()
			_ = r.Close(ctx)
			globex := 0
			for _, b := range m.callsSnapshot() {
				if b.GetParent() == "tenants/globex" {
					globex++
				}
			}
			if globex != 1 {
				t.Errorf("%d calls for globex, want the one refused (no retry, no count sent back)", globex)
			}
			if _, dropped := m.totals(); dropped["acme"] != 0 {
				t.Errorf("dropped %v, want none reported", dropped)
			}
		})
	}
}

// TestAccessReporterRefusedEmptyBatchIsNotResent: the loss count of an invalid batch is reported
// once; if that report is itself refused, it is not sent again.
func TestAccessReporterRefusedEmptyBatchIsNotResent(t *testing.T) {
	m := &fakeMonitor{failNext: []error{
		status.Error(codes.InvalidArgument, "events[0]"), status.Error(codes.InvalidArgument, "dropped"),
	}}
	r := newReporter(t, startMonitor(t, m), nil)
	r.Record(accessEvent(0, "acme"))
	testkit.Eventually(t, 0, "the loss report to be refused too", func() (bool, error) { return len(m.callsSnapshot()) >= 2, nil })
	r.Record(accessEvent(1, "acme"))
	testkit.Eventually(t, 0, "the next event to be stored", func() (bool, error) { return r.Stats().Sent == 1, nil })
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	_ = r.Close(ctx)
	calls := m.callsSnapshot()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want the invalid batch, its refused loss report, and the next batch", len(calls))
	}
	if calls[1].GetDropped() != 1 || len(calls[1].GetEvents()) != 0 || calls[2].GetDropped() != 0 {
		t.Errorf("loss report dropped=%d events=%d, next batch dropped=%d; want 1, 0, 0",
			calls[1].GetDropped(), len(calls[1].GetEvents()), calls[2].GetDropped())
	}
}
