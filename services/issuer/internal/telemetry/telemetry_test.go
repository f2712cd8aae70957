package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/telemetry"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorder is a publisher that remembers each batch; it blocks while gate is open (not closed) and
// fails while fail is set.
type recorder struct {
	gate chan struct{}
	mu   sync.Mutex
	fail error
	got  []published
}

type published struct {
	subject, typ, ceSubject, tenant string
	ids                             []string
}

func newRecorder() *recorder {
	g := make(chan struct{})
	close(g)
	return &recorder{gate: g}
}

func (r *recorder) Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error) {
	select {
	case <-r.gate:
	case <-ctx.Done():
		return eventstore.Event{}, ctx.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return eventstore.Event{}, r.fail
	}
	p := published{subject: subject, typ: typ, ceSubject: ceSubject, tenant: md.Tenant}
	for _, m := range data.(*issuerv1.TokenRequestedBatch).GetRequests() {
		p.ids = append(p.ids, m.GetRequestId())
	}
	r.got = append(r.got, p)
	return eventstore.Event{}, nil
}

func (r *recorder) batches() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.got...)
}

func (r *recorder) records() int {
	n := 0
	for _, b := range r.batches() {
		n += len(b.ids)
	}
	return n
}

func rec(tenant, id string) *issuerv1.TokenRequested {
	return &issuerv1.TokenRequested{Tenant: tenant, RequestId: id, Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}
}

func start(t *testing.T, e *telemetry.Emitter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBatchesPerTenant(t *testing.T) {
	r := newRecorder()
	e, err := telemetry.New(telemetry.Config{Publisher: r, MaxBatch: 3, FlushInterval: time.Hour,
		Registerer: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, e)
	// MaxBatch 3 and no timed flush: acme's three fill a batch, globex's two wait.
	for _, m := range []*issuerv1.TokenRequested{rec("acme", "a1"), rec("globex", "g1"), rec("acme", "a2"), rec("globex", "g2"), rec("acme", "a3")} {
		e.TokenRequested("", eventstore.Metadata{}, m)
	}
	waitFor(t, "acme's full batch", func() bool { return len(r.batches()) == 1 })
	b := r.batches()[0]
	if b.subject != "telemetry.acme.token.requested" || b.typ != telemetry.TokenRequestedBatchType ||
		b.ceSubject != "tenants/acme" || b.tenant != "acme" || fmt.Sprint(b.ids) != "[a1 a2 a3]" {
		t.Fatalf("first batch = %+v", b)
	}
	stop() // the stop drains globex's partial batch
	got := r.batches()
	if len(got) != 2 || got[1].tenant != "globex" || fmt.Sprint(got[1].ids) != "[g1 g2]" {
		t.Fatalf("batches = %+v", got)
	}
	if e.Published() != 5 || e.Dropped() != 0 || e.Failed() != 0 {
		t.Fatalf("published %d dropped %d failed %d", e.Published(), e.Dropped(), e.Failed())
	}
}

func TestFlushIntervalPublishesPartialBatches(t *testing.T) {
	r := newRecorder()
	e, err := telemetry.New(telemetry.Config{Publisher: r, MaxBatch: 1000, FlushInterval: 10 * time.Millisecond,
		Registerer: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, e)
	defer stop()
	e.TokenRequested("", eventstore.Metadata{}, rec("acme", "only"))
	waitFor(t, "the timed flush", func() bool { return r.records() == 1 })
}

func TestFullBufferDropsAndCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := newRecorder()
	e, err := telemetry.New(telemetry.Config{Publisher: r, Buffer: 2, Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is running: two fit, the rest are dropped without blocking.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, id := range []string{"r1", "r2", "r3", "r4"} {
			e.TokenRequested("", eventstore.Metadata{}, rec("acme", id))
		}
	}()
	select {
	case <-done:
	case <-time.After(testkit.DefaultWait):
		t.Fatal("TokenRequested blocked")
	}
	if e.Dropped() != 2 {
		t.Fatalf("dropped = %d, want 2", e.Dropped())
	}
	if got := counterValue(t, reg, "issuer_telemetry_dropped_total"); got != 2 {
		t.Fatalf("issuer_telemetry_dropped_total = %v", got)
	}
	stop := start(t, e)
	stop()
	if got := r.batches(); len(got) != 1 || fmt.Sprint(got[0].ids) != "[r1 r2]" {
		t.Fatalf("published %+v, want the two buffered records", got)
	}
	if got := counterValue(t, reg, "issuer_telemetry_batches_total"); got != 1 {
		t.Fatalf("issuer_telemetry_batches_total = %v", got)
	}
}

func TestFailedPublishCountsEveryRecord(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := newRecorder()
	r.fail = errors.New("stream unavailable")
	e, err := telemetry.New(telemetry.Config{Publisher: r, FlushInterval: time.Millisecond, Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, e)
	for i := range 5 {
		e.TokenRequested("", eventstore.Metadata{}, rec("acme", fmt.Sprint(i)))
	}
	waitFor(t, "the failures to be counted", func() bool { return e.Failed() == 5 })
	stop()
	if got := counterValue(t, reg, "issuer_telemetry_publish_failures_total"); got != 5 {
		t.Fatalf("issuer_telemetry_publish_failures_total = %v, want 5 (records, not batches)", got)
	}
}

func TestStopWithAStuckPublisherCountsWhatIsLeft(t *testing.T) {
	r := newRecorder()
	r.gate = make(chan struct{}) // never opens: every publish waits until its context ends
	e, err := telemetry.New(telemetry.Config{Publisher: r, Workers: 1, MaxBatch: 2, FlushInterval: time.Hour,
		Registerer: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, e)
	for i := range 7 {
		e.TokenRequested("", eventstore.Metadata{}, rec("acme", fmt.Sprint(i)))
	}
	stop() // bounded by the drain timeout
	if e.Published() != 0 || e.Dropped()+e.Failed() != 7 {
		t.Fatalf("published %d, dropped %d, failed %d: every record must be published or counted", e.Published(), e.Dropped(), e.Failed())
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestPublishesToTheTelemetryStream(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/issuer"))
	ctx := context.Background()
	if err := store.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := telemetry.New(telemetry.Config{Publisher: store, Registerer: prometheus.NewRegistry(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, e)
	e.TokenRequested("", eventstore.Metadata{}, &issuerv1.TokenRequested{Tenant: "acme", ClientId: "c1", RequestId: "req-1",
		Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client"})
	stop()
	stream, err := js.Stream(ctx, eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "telemetry.acme.token.requested")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatal("no telemetry stored (the shutdown drain must publish what was queued)")
	}
	if err != nil {
		t.Fatal(err)
	}
	ev, err := eventstore.EventFromRaw(eventstore.StreamTelemetry, msg.Sequence, msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := eventstore.DecodeAs[*issuerv1.TokenRequestedBatch](ev)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "token.requested.batch" || ev.Subject != "tenants/acme" || ev.Metadata.Tenant != "acme" ||
		len(b.GetRequests()) != 1 || b.GetRequests()[0].GetError() != "invalid_client" || b.GetRequests()[0].GetTime() == nil {
		t.Fatalf("event %+v payload %v", ev, b)
	}
}

func counterWithLabel(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func TestDenialTelemetrySampled(t *testing.T) {
	const (
		issued  = 500
		denials = 10_000
		perSec  = 5
	)
	reg := prometheus.NewRegistry()
	r := newRecorder()
	frozen := time.Unix(1_700_000_000, 0)
	e, err := telemetry.New(telemetry.Config{Publisher: r, Buffer: issued, DenialBuffer: 64, DenialsPerSecond: perSec,
		MaxBatch: 256, FlushInterval: time.Hour, Registerer: reg, Logger: quiet, Now: func() time.Time { return frozen }})
	if err != nil {
		t.Fatal(err)
	}
	// A flood of failed client authentications in two tenants, the issued tokens in between, before
	// anything is published: the issued tokens' buffer holds exactly them.
	for i := range denials {
		tenant := []string{"acme", "globex"}[i%2]
		e.TokenRequested("", eventstore.Metadata{}, &issuerv1.TokenRequested{Tenant: tenant, RequestId: fmt.Sprint("d", i),
			Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_client"})
		if i%(denials/issued) == 0 {
			e.TokenRequested("", eventstore.Metadata{}, rec("acme", fmt.Sprint("i", i)))
		}
	}
	stop := start(t, e)
	stop()

	issuedStored, deniedStored := 0, 0
	for _, b := range r.batches() {
		for _, id := range b.ids {
			if id[0] == 'i' {
				issuedStored++
			} else {
				deniedStored++
			}
		}
	}
	if issuedStored != issued || e.Dropped() != 0 {
		t.Fatalf("%d issued-token records stored, %d dropped; want all %d stored", issuedStored, e.Dropped(), issued)
	}
	// The clock stands still: each tenant stores its burst (the rate) and no more.
	if deniedStored != 2*perSec {
		t.Fatalf("%d denials stored, want %d (%d per tenant)", deniedStored, 2*perSec, perSec)
	}
	if got := e.NotStored(); got != denials-2*perSec {
		t.Fatalf("NotStored = %d, want %d", got, denials-2*perSec)
	}
	if got := counterWithLabel(t, reg, "issuer_token_denials_not_stored_total", "error", "invalid_client"); got != denials-2*perSec {
		t.Fatalf("issuer_token_denials_not_stored_total{error=invalid_client} = %v, want %d", got, denials-2*perSec)
	}
	if got := counterWithLabel(t, reg, "issuer_token_requests_total", "error", "invalid_client"); got != denials {
		t.Fatalf("issuer_token_requests_total{error=invalid_client} = %v, want every denial (%d)", got, denials)
	}
	if n := len(r.batches()); n > 5 {
		t.Fatalf("%d events stored for %d requests, want a handful of batches", n, denials+issued)
	}
}

func TestDenialSamplingFollowsTheClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newRecorder()
	e, err := telemetry.New(telemetry.Config{Publisher: r, DenialsPerSecond: 2, FlushInterval: time.Hour,
		Registerer: prometheus.NewRegistry(), Logger: quiet, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	deny := func(n int) {
		for range n {
			e.TokenRequested("", eventstore.Metadata{}, &issuerv1.TokenRequested{Tenant: "acme", RequestId: "d",
				Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED, Error: "invalid_request"})
		}
	}
	deny(10)
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	deny(10)
	stop := start(t, e)
	stop()
	if got := r.records(); got != 4 {
		t.Fatalf("%d denials stored over two seconds at 2/s, want 4", got)
	}
	if got := e.NotStored(); got != 16 {
		t.Fatalf("NotStored = %d, want 16", got)
	}
}
