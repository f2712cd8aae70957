package ingest_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLagWatcher: the lag and headroom of the ingest consumer follow TELEMETRY; a backlog filling a
// stream at its limit is warned about, and events the stream discarded before they were stored are
// reported.
func TestLagWatcher(t *testing.T) {
	h := newHarness(t)
	logs := &syncBuffer{}
	w, err := ingest.NewLagWatcher(ingest.LagConfig{JetStream: h.js, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}}
	publish := func(n int) (last eventstore.Event) {
		for range n {
			last = h.publish(t, "telemetry.acme.note", "note", "tenants/acme", structpb.NewStringValue("x"), md)
		}
		return last
	}
	publish(10)
	l, err := w.Check(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l.AckFloor != 0 || l.Behind != 10 || l.Headroom != 0 || l.NearLimit || l.Discarded != 0 {
		t.Fatalf("before any consumer: %+v, want 10 behind, headroom 0, not near the limit", l)
	}
	if floor, err := w.AckFloor(t.Context()); err != nil || floor != 0 {
		t.Fatalf("AckFloor without a consumer = %d, %v; want 0", floor, err)
	}

	stop := h.run(t, h.store)
	last := publish(1)
	h.waitAcked(t, last.Sequence)
	stop()
	if l, err = w.Check(t.Context()); err != nil || l.Behind != 0 || l.Headroom != 1 || l.AckFloor != last.Sequence {
		t.Fatalf("caught up: %+v (%v), want nothing behind, headroom 1", l, err)
	}
	if floor, err := w.AckFloor(t.Context()); err != nil || floor != last.Sequence {
		t.Fatalf("AckFloor = %d, %v; want %d", floor, err, last.Sequence)
	}

	// A stream of at most 20 events and a stalled consumer: 19 behind is a warning, 30 a loss.
	s, err := h.js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs = 20
	if _, err := h.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	publish(19)
	if l, err = w.Check(t.Context()); err != nil || !l.NearLimit || l.Headroom >= ingest.LowHeadroom || l.Discarded != 0 {
		t.Fatalf("backlog at the limit: %+v (%v), want near the limit with headroom < %v", l, err, ingest.LowHeadroom)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "backlog fills TELEMETRY") {
		t.Fatalf("no warning logged: %s", logs)
	}
	publish(10)
	if l, err = w.Check(t.Context()); err != nil || l.Discarded != 9 {
		t.Fatalf("after the stream discarded unstored events: %+v (%v), want 9 discarded", l, err)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "discarded events the monitor had not stored") {
		t.Fatalf("no error logged: %s", logs)
	}
}
