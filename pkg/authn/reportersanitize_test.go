package authn_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// The monitor's validator (services/monitor/internal/access/access.go: Record, validateEvent,
// validateTime) is internal to the monitor's module, so its rules are restated here; keep the two in
// step. serverMaxBatchBytes is its DefaultMaxBatchBytes.
const serverMaxBatchBytes = 960 << 10

func serverPrintable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func serverIsUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && len(s) == 36 && u.String() == s
}

// serverValidateBatch returns why the monitor would refuse req, or "" when it accepts it.
func serverValidateBatch(req *monitorv1.RecordAccessRequest, now time.Time) string {
	tenant, ok := strings.CutPrefix(req.GetParent(), "tenants/")
	switch {
	case !ok || !authn.ValidTenant(tenant):
		return "parent"
	case !serverIsUUID(req.GetBatchId()):
		return "batch_id"
	case req.GetDropped() < 0:
		return "dropped"
	case len(req.GetEvents()) == 0 && req.GetDropped() == 0, len(req.GetEvents()) > 1000:
		return "events"
	}
	for i, e := range req.GetEvents() {
		if field := serverValidateEvent(tenant, e, now); field != "" {
			return fmt.Sprintf("events[%d].%s", i, field)
		}
	}
	if proto.Size(req) > serverMaxBatchBytes {
		return "events (size)"
	}
	return ""
}

func serverValidateEvent(tenant string, e *monitorv1.AccessEvent, now time.Time) string {
	if !serverIsUUID(e.GetEventId()) {
		return "event_id"
	}
	if ts := e.GetTime(); ts == nil || ts.CheckValid() != nil || ts.AsTime().After(now.Add(5*time.Minute)) {
		return "time"
	}
	if e.GetTenant() != tenant {
		return "tenant"
	}
	if a := e.GetAgent(); a != "" {
		id, ok := strings.CutPrefix(a, "tenants/"+tenant+"/agents/")
		if !ok || id == "" || strings.Contains(id, "/") || len(a) > 256 || !serverPrintable(a) {
			return "agent"
		}
	}
	switch e.GetOutcome() {
	case monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED, monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED:
	default:
		return "outcome"
	}
	if e.GetResource() == "" {
		return "resource"
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"resource", e.GetResource(), 1024}, {"client_id", e.GetClientId(), 256}, {"subject", e.GetSubject(), 256},
		{"on_behalf_of", e.GetOnBehalfOf(), 256}, {"environment", e.GetEnvironment(), 256}, {"action", e.GetAction(), 256},
		{"reason", e.GetReason(), 256}, {"request_id", e.GetRequestId(), 128}, {"trace_id", e.GetTraceId(), 256},
		{"source_address", e.GetSourceAddress(), 256}, {"token_id", e.GetTokenId(), 256}, {"audience", e.GetAudience(), 256},
	} {
		if len(f.value) > f.max || !serverPrintable(f.value) {
			return f.name
		}
	}
	if !slices.Contains([]string{"", "bearer", "dpop", "mtls"}, e.GetTokenBinding()) {
		return "token_binding"
	}
	if len(e.GetScopes()) > 64 {
		return "scopes"
	}
	for _, s := range e.GetScopes() {
		if s == "" || len(s) > 128 || !serverPrintable(s) || strings.ContainsRune(s, ' ') {
			return "scopes"
		}
	}
	if st := e.GetStatus(); st < 0 || st > 999 {
		return "status"
	}
	if e.GetResponseBytes() < 0 {
		return "response_bytes"
	}
	if e.GetRows() < 0 {
		return "rows"
	}
	if l := e.GetLatency(); l != nil && (l.CheckValid() != nil || l.AsDuration() < 0) {
		return "latency"
	}
	return ""
}

// recordAll records evs, closes the reporter (which sends everything) and returns the batches the
// monitor stored.
func recordAll(t *testing.T, mut func(*authn.AccessReporterConfig), evs ...authn.AccessEvent) []*monitorv1.RecordAccessRequest {
	t.Helper()
	m := &fakeMonitor{}
	r := newReporter(t, startMonitor(t, m), mut)
	for _, ev := range evs {
		r.Record(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s := r.Stats(); s.Sent != int64(len(evs)) {
		t.Fatalf("stats %+v, want %d sent", s, len(evs))
	}
	return m.callsSnapshot()
}

func TestAccessReporterCleansHostileEvents(t *testing.T) {
	now := time.Now()
	base := func() authn.AccessEvent {
		return authn.AccessEvent{Time: now, Tenant: "acme", Agent: "tenants/acme/agents/a1", ClientID: "c1",
			Subject: "c1", Resource: "/files/a", Action: "GET", Scopes: []string{"files.read"}, Allowed: true,
			Status: 200, RequestID: "r-1", Binding: authn.BindingBearer, Latency: time.Millisecond}
	}
	manyScopes := make([]string, 500)
	for i := range manyScopes {
		manyScopes[i] = fmt.Sprintf("scope:%d", i)
	}
	tests := []struct {
		name  string
		mut   func(*authn.AccessEvent)
		check func(t *testing.T, got *monitorv1.AccessEvent)
	}{
		{name: "clean event is unchanged", mut: func(*authn.AccessEvent) {}, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetResource() != "/files/a" || got.GetAgent() != "tenants/acme/agents/a1" || got.GetRequestId() != "r-1" ||
				!slices.Equal(got.GetScopes(), []string{"files.read"}) || got.GetTokenBinding() != "bearer" || got.GetStatus() != 200 ||
				!got.GetTime().AsTime().Equal(now) {
				t.Errorf("clean event changed: %v", got)
			}
		}},
		{name: "newline in the path", mut: func(e *authn.AccessEvent) { e.Resource = "/files/a\nINJECTED b" }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetResource() != "/files/a\uFFFDINJECTED b" {
				t.Errorf("resource %q", got.GetResource())
			}
		}},
		{name: "10 KiB request id", mut: func(e *authn.AccessEvent) { e.RequestID = strings.Repeat("r", 10<<10) }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetRequestId() != strings.Repeat("r", 128) {
				t.Errorf("request id of %d bytes", len(got.GetRequestId()))
			}
		}},
		{name: "500 scopes", mut: func(e *authn.AccessEvent) { e.Scopes = manyScopes }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if !slices.Equal(got.GetScopes(), manyScopes[:64]) {
				t.Errorf("%d scopes, want the first 64", len(got.GetScopes()))
			}
		}},
		{name: "invalid UTF-8", mut: func(e *authn.AccessEvent) { e.Resource, e.Subject = "/f\xff\xfe/x", "sub\xc3" }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetResource() != "/f\uFFFD\uFFFD/x" || got.GetSubject() != "sub\uFFFD" {
				t.Errorf("resource %q subject %q", got.GetResource(), got.GetSubject())
			}
		}},
		{name: "long multi-byte string cut on a rune boundary", mut: func(e *authn.AccessEvent) { e.ClientID = "a" + strings.Repeat("é", 300) }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if c := got.GetClientId(); len(c) != 255 || !strings.HasPrefix("a"+strings.Repeat("é", 300), c) {
				t.Errorf("client id %q (%d bytes)", c, len(c))
			}
		}},
		{name: "1 MiB resource", mut: func(e *authn.AccessEvent) { e.Resource = "/" + strings.Repeat("x", 1<<20) }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if len(got.GetResource()) != 1024 {
				t.Errorf("resource of %d bytes", len(got.GetResource()))
			}
		}},
		{name: "empty resource", mut: func(e *authn.AccessEvent) { e.Resource = "" }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetResource() != "/" {
				t.Errorf("resource %q, want /", got.GetResource())
			}
		}},
		{name: "zero-width and non-breaking spaces", mut: func(e *authn.AccessEvent) { e.Action = "GE\u200bT\u00a0" }, check: func(*testing.T, *monitorv1.AccessEvent) {}},
		{name: "scopes with spaces, empty and oversized", mut: func(e *authn.AccessEvent) {
			e.Scopes = []string{"a b", "", strings.Repeat("s", 200), "ok\tx"}
		}, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			want := []string{"a\uFFFDb", strings.Repeat("s", 128), "ok\uFFFDx"}
			if !slices.Equal(got.GetScopes(), want) {
				t.Errorf("scopes %q, want %q", got.GetScopes(), want)
			}
		}},
		{name: "time in the future", mut: func(e *authn.AccessEvent) { e.Time = now.Add(time.Hour) }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetTime().AsTime().After(time.Now()) {
				t.Errorf("time %s is in the future", got.GetTime().AsTime())
			}
		}},
		{name: "no time", mut: func(e *authn.AccessEvent) { e.Time = time.Time{} }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetTime().AsTime().Before(now.Add(-time.Minute)) {
				t.Errorf("time %s, want about now", got.GetTime().AsTime())
			}
		}},
		{name: "unknown binding, status and negative numbers", mut: func(e *authn.AccessEvent) {
			e.Binding, e.Status, e.ResponseBytes, e.Rows, e.Latency = "carrier-pigeon", 5000, -1, -2, -time.Second
		}, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetTokenBinding() != "" || got.GetStatus() != 0 || got.GetResponseBytes() != 0 || got.GetRows() != 0 || got.GetLatency().AsDuration() != 0 {
				t.Errorf("got %v", got)
			}
		}},
		{name: "agent of another tenant", mut: func(e *authn.AccessEvent) { e.Agent = "tenants/globex/agents/a1" }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetAgent() != "" {
				t.Errorf("agent %q kept", got.GetAgent())
			}
		}},
		{name: "invalid tenant", mut: func(e *authn.AccessEvent) { e.Tenant, e.Agent = "Not A Tenant\n", "" }, check: func(t *testing.T, got *monitorv1.AccessEvent) {
			if got.GetTenant() != "acme" {
				t.Errorf("tenant %q, want the reporter's", got.GetTenant())
			}
		}},
		{name: "control characters everywhere", mut: func(e *authn.AccessEvent) {
			e.ClientID, e.OnBehalfOf, e.Environment, e.Reason, e.TraceID = "c\x00", "u\r\n", "\x1b[31m", "r\x7f", "t\u2028"
			e.SourceAddress, e.TokenID, e.Audience = "10.0.0.1\t", "j\x01", "https://a\x00"
		}, check: func(*testing.T, *monitorv1.AccessEvent) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := base()
			tt.mut(&ev)
			scopesBefore := slices.Clone(ev.Scopes)
			calls := recordAll(t, nil, ev)
			if len(calls) != 1 || len(calls[0].GetEvents()) != 1 {
				t.Fatalf("got %d batches, want one batch of one event", len(calls))
			}
			if why := serverValidateBatch(calls[0], time.Now()); why != "" {
				t.Fatalf("the monitor would refuse the batch: %s (%v)", why, calls[0].GetEvents()[0])
			}
			if !slices.Equal(ev.Scopes, scopesBefore) {
				t.Errorf("the caller's scopes were changed: %q", ev.Scopes)
			}
			tt.check(t, calls[0].GetEvents()[0])
		})
	}
}

func TestAccessReporterSplitsLargeBatches(t *testing.T) {
	// 1000 events of about 14 KiB each would be a 14 MiB request: the reporter splits it into
	// batches under MaxAccessBatchBytes, each with its own batch id.
	big := authn.AccessEvent{Time: time.Now(), Tenant: "acme", Resource: "/" + strings.Repeat("r", 2000),
		Action: strings.Repeat("a", 300), ClientID: strings.Repeat("c", 300), Subject: strings.Repeat("s", 300),
		OnBehalfOf: strings.Repeat("o", 300), Environment: strings.Repeat("e", 300), Reason: strings.Repeat("x", 300),
		RequestID: strings.Repeat("q", 300), TraceID: strings.Repeat("t", 300), SourceAddress: strings.Repeat("i", 300),
		TokenID: strings.Repeat("j", 300), Audience: strings.Repeat("u", 300), Status: 200, Allowed: true}
	for i := range 100 {
		big.Scopes = append(big.Scopes, fmt.Sprintf("%0128d", i))
	}
	evs := make([]authn.AccessEvent, 1000)
	for i := range evs {
		evs[i] = big
	}
	calls := recordAll(t, func(c *authn.AccessReporterConfig) {
		c.QueueSize, c.BatchSize, c.FlushInterval = 2000, authn.MaxAccessBatchSize, time.Hour
	}, evs...)
	total, ids := 0, map[string]bool{}
	for _, b := range calls {
		if size := proto.Size(b); size > authn.MaxAccessBatchBytes {
			t.Errorf("batch %s encodes to %d bytes, more than %d", b.GetBatchId(), size, authn.MaxAccessBatchBytes)
		}
		if why := serverValidateBatch(b, time.Now()); why != "" {
			t.Fatalf("the monitor would refuse batch %s: %s", b.GetBatchId(), why)
		}
		if ids[b.GetBatchId()] {
			t.Errorf("batch id %s used for two parts", b.GetBatchId())
		}
		ids[b.GetBatchId()] = true
		total += len(b.GetEvents())
	}
	if total != len(evs) || len(calls) < 2 {
		t.Fatalf("%d events in %d batches, want %d events in several batches", total, len(calls), len(evs))
	}
}
