package siem_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/siem"
)

var quiet = slog.New(slog.DiscardHandler)

// receiver is a SIEM webhook that checks every request's signature and answers as told.
type receiver struct {
	t      *testing.T
	mu     sync.Mutex
	answer func(n int) (status int, header http.Header) // n counts requests from 1
	n      int
	got    []string // event ids of requests answered 2xx
	bad    []string // problems seen
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if err := siem.VerifySignature(secret, req.Header.Get(siem.HeaderSignature), body, time.Minute); err != nil {
		r.bad = append(r.bad, "signature: "+err.Error())
	}
	var e siem.Event
	if err := json.Unmarshal(body, &e); err != nil {
		r.bad = append(r.bad, "body: "+err.Error())
	}
	if id := req.Header.Get(siem.HeaderEventID); id != e.Metadata.UID || id == "" {
		r.bad = append(r.bad, "event id header "+id+" differs from metadata.uid "+e.Metadata.UID)
	}
	status, h := http.StatusOK, http.Header(nil)
	if r.answer != nil {
		status, h = r.answer(r.n)
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	if status/100 == 2 {
		r.got = append(r.got, e.Metadata.UID)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status))
}

func (r *receiver) state() (requests int, got, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, append([]string(nil), r.got...), append([]string(nil), r.bad...)
}

type env struct {
	nats *testkit.NATS
	js   jetstream.JetStream
	es   *eventstore.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	es := eventstore.New(js, eventstore.WithSource("agentid/monitor"), eventstore.WithLogger(quiet))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &env{nats: n, js: js, es: es}
}

// start runs an exporter until the returned stop is called (or the test ends).
func (e *env) start(t *testing.T, wh *siem.Webhook, reg prometheus.Registerer) (stop func()) {
	t.Helper()
	x, err := siem.New(siem.Config{Source: e.es, JetStream: e.js, Webhook: wh, Logger: quiet, Registerer: reg,
		ConsumeOptions: []eventstore.ConsumeOption{eventstore.WithBackoff(10 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exporter: %v", err)
				}
			case <-time.After(testkit.DefaultWait):
				t.Error("exporter did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func webhook(t *testing.T, url string, attempts int) *siem.Webhook {
	t.Helper()
	wh, err := siem.NewWebhook(siem.WebhookConfig{URL: url, Secret: secret, MaxAttempts: attempts,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return wh
}

// raise publishes an alert on ALERTS as the monitor's alert publisher does and returns its id.
func (e *env) raise(t *testing.T) string {
	t.Helper()
	a := testAlert()
	a.AlertId = uuid.NewString()
	if _, err := e.es.PublishWithID(t.Context(), a.AlertId, "alerts.acme.bulk_export", "alert.raised", a.Agent,
		&monitorv1.AlertRaised{Alert: a}, eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}}); err != nil {
		t.Fatal(err)
	}
	return a.AlertId
}

// settled waits until the consumer has acknowledged everything.
func (e *env) settled(t *testing.T, consumer, stream string) {
	t.Helper()
	testkit.Eventually(t, 0, consumer+" acknowledging everything", func() (bool, error) {
		c, err := e.js.Consumer(t.Context(), stream, consumer)
		if err != nil {
			return false, err
		}
		info, err := c.Info(t.Context())
		if err != nil {
			return false, err
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0, nil
	})
}

// deadLetters reads the SIEM_DLQ stream.
func (e *env) deadLetters(t *testing.T) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := e.js.Stream(t.Context(), eventstore.StreamSIEMDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestWebhookRetriesServerErrorsThenDeliversOnce(t *testing.T) {
	e := newEnv(t)
	rcv := &receiver{t: t, answer: func(n int) (int, http.Header) {
		if n <= 2 {
			return http.StatusInternalServerError, nil
		}
		return http.StatusOK, nil
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	e.start(t, webhook(t, srv.URL, 5), reg)
	id := e.raise(t)

	testkit.Eventually(t, 0, "the alert delivered", func() (bool, error) {
		_, got, _ := rcv.state()
		return len(got) == 1, nil
	})
	e.settled(t, siem.ConsumerAlerts, eventstore.StreamAlerts)
	n, got, bad := rcv.state()
	if n != 3 || len(got) != 1 || got[0] != id || len(bad) != 0 {
		t.Fatalf("requests = %d, delivered = %v, problems = %v; want 3 requests, %s delivered once, no problems", n, got, bad, id)
	}
	if r := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_retries_total", nil)); r != 2 {
		t.Errorf("retries = %v, want 2", r)
	}
	if d := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_delivered_total", map[string]string{"sink": "webhook"})); d != 1 {
		t.Errorf("delivered to the webhook = %v, want 1", d)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Errorf("dead letters = %d, want none", len(dl))
	}
}

func TestWebhookHonoursRetryAfterOn429(t *testing.T) {
	e := newEnv(t)
	var first, second time.Time
	rcv := &receiver{t: t, answer: func(n int) (int, http.Header) {
		if n == 1 {
			first = time.Now()
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}
		}
		second = time.Now()
		return http.StatusAccepted, nil
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	e.start(t, webhook(t, srv.URL, 3), prometheus.NewRegistry())
	e.raise(t)
	testkit.Eventually(t, 0, "the alert delivered", func() (bool, error) {
		_, got, _ := rcv.state()
		return len(got) == 1, nil
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	// The backoff alone would wait at most 5 ms: the retry waited for Retry-After.
	if d := second.Sub(first); d < time.Second {
		t.Fatalf("second attempt %v after the 429, want at least the Retry-After of 1s", d)
	}
}

func TestWebhookPermanentRefusalIsDeadLettered(t *testing.T) {
	e := newEnv(t)
	rcv := &receiver{t: t, answer: func(int) (int, http.Header) { return http.StatusBadRequest, nil }}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	e.start(t, webhook(t, srv.URL, 5), reg)
	id := e.raise(t)

	testkit.Eventually(t, 0, "a dead letter", func() (bool, error) { return len(e.deadLetters(t)) == 1, nil })
	e.settled(t, siem.ConsumerAlerts, eventstore.StreamAlerts)
	dl := e.deadLetters(t)[0]
	if dl.Subject != "siem.dead.acme" {
		t.Errorf("dead letter subject = %s, want siem.dead.acme", dl.Subject)
	}
	h := dl.Header
	if h.Get(siem.NATSHeaderEventID) != id || h.Get(nats.MsgIdHdr) != id || h.Get(siem.NATSHeaderAttempts) != "1" || h.Get(siem.NATSHeaderStatus) != "400" ||
		!strings.Contains(h.Get(siem.NATSHeaderError), "400 Bad Request") || !strings.HasPrefix(h.Get(siem.NATSHeaderSource), eventstore.StreamAlerts+"/") {
		t.Errorf("dead letter headers = %v; want event id %s, one attempt, status 400 and its error, the source", h, id)
	}
	var ev siem.Event
	if err := json.Unmarshal(dl.Data, &ev); err != nil || ev.Metadata.UID != id || ev.ClassUID != siem.ClassDetectionFinding {
		t.Errorf("dead letter body = %s (%v); want the OCSF finding %s", dl.Data, err, id)
	}
	if n, _, _ := rcv.state(); n != 1 {
		t.Errorf("requests = %d, want 1 (a 400 is not retried)", n)
	}
	if d := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_dead_lettered_total", map[string]string{"reason": "refused"})); d != 1 {
		t.Errorf("dead-lettered (refused) = %v, want 1", d)
	}
}

func TestWebhookExhaustedAttemptsAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	rcv := &receiver{t: t, answer: func(int) (int, http.Header) { return http.StatusServiceUnavailable, nil }}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	e.start(t, webhook(t, srv.URL, 3), reg)
	id := e.raise(t)

	testkit.Eventually(t, 0, "a dead letter", func() (bool, error) { return len(e.deadLetters(t)) == 1, nil })
	e.settled(t, siem.ConsumerAlerts, eventstore.StreamAlerts)
	h := e.deadLetters(t)[0].Header
	if h.Get(siem.NATSHeaderEventID) != id || h.Get(siem.NATSHeaderAttempts) != "3" || h.Get(siem.NATSHeaderStatus) != "503" {
		t.Errorf("dead letter headers = %v; want 3 attempts ending in 503", h)
	}
	if n, _, _ := rcv.state(); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
	if d := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_dead_lettered_total", map[string]string{"reason": "exhausted"})); d != 1 {
		t.Errorf("dead-lettered (exhausted) = %v, want 1", d)
	}
}

func TestReceiverDownAcrossARestartIsDeliveredAfter(t *testing.T) {
	e := newEnv(t)
	// A port with nothing listening: every attempt is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	reg := prometheus.NewRegistry()
	stop := e.start(t, webhook(t, "http://"+addr+"/hook", 1_000_000), reg)
	id := e.raise(t)
	testkit.Eventually(t, 0, "failed attempts", func() (bool, error) {
		return testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_retries_total", nil)) >= 2, nil
	})
	stop() // the monitor restarts while the receiver is down

	rcv := &receiver{t: t}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(rcv)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	e.start(t, webhook(t, "http://"+addr+"/hook", 1_000_000), prometheus.NewRegistry())
	testkit.Eventually(t, 0, "the alert delivered after the restart", func() (bool, error) {
		_, got, _ := rcv.state()
		return len(got) >= 1, nil
	})
	e.settled(t, siem.ConsumerAlerts, eventstore.StreamAlerts)
	_, got, bad := rcv.state()
	if len(got) != 1 || got[0] != id || len(bad) != 0 {
		t.Fatalf("delivered = %v, problems = %v; want %s once", got, bad, id)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Errorf("dead letters = %d, want none", len(dl))
	}
}

func TestNATSCopyOfEveryExportedEvent(t *testing.T) {
	e := newEnv(t)
	nc := e.nats.Conn(t)
	sub, err := nc.SubscribeSync("siem.ocsf.acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.start(t, nil, reg) // NATS only

	registry := eventstore.New(e.js, eventstore.WithSource("agentid/registry"), eventstore.WithLogger(quiet))
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}}
	suspended, err := registry.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: "agent", AggregateID: "report-bot", ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: "req-suspend",
		Type: "agent.suspended", Subject: agent, Data: &registryv1.AgentSuspended{Name: agent, Reason: "bulk export", Cause: "alert:a1"}, Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
	// An agent event the export does not send is acknowledged without a copy.
	if _, err := registry.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: "agent", AggregateID: "report-bot", ExpectedVersion: eventstore.AnyVersion, IdempotencyKey: "req-note",
		Type: "agent.noted", Subject: agent, Data: &registryv1.AgentResumed{Name: agent}, Metadata: md,
	}); err != nil {
		t.Fatal(err)
	}
	alertID := e.raise(t)

	want := map[string]int{suspended.ID: siem.ClassAccountChange, alertID: siem.ClassDetectionFinding}
	for len(want) > 0 {
		m, err := sub.NextMsg(testkit.DefaultWait)
		if err != nil {
			t.Fatalf("waiting for a copy on siem.ocsf.acme: %v", err)
		}
		var ev siem.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(siem.NATSHeaderEventID)
		class, ok := want[id]
		if !ok || ev.Metadata.UID != id || ev.ClassUID != class {
			t.Fatalf("copy %s: uid %s class %d; want one of %v", id, ev.Metadata.UID, ev.ClassUID, want)
		}
		delete(want, id)
	}
	e.settled(t, siem.ConsumerAgents, eventstore.StreamAgents)
	e.settled(t, siem.ConsumerAlerts, eventstore.StreamAlerts)
	if m, err := sub.NextMsg(50 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("unexpected copy %v (%v)", m, err)
	}
	if d := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_delivered_total", map[string]string{"sink": "nats"})); d != 2 {
		t.Errorf("delivered on NATS = %v, want 2", d)
	}
}

// counter finds a metric of reg by name and labels.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Error(err)
			return
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue metrics
					}
				}
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
				return
			}
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.CounterValue, 0)
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// TestWebhookRetriesAuthFailuresDuringTheGrace: 401 and 403 answers (a secret being rotated) are
// retried beyond MaxAttempts while the grace lasts, and the event is delivered once the receiver
// takes it again.
func TestWebhookRetriesAuthFailuresDuringTheGrace(t *testing.T) {
	e := newEnv(t)
	rcv := &receiver{t: t, answer: func(n int) (int, http.Header) {
		switch {
		case n <= 2:
			return http.StatusUnauthorized, nil
		case n <= 4:
			return http.StatusForbidden, nil
		}
		return http.StatusOK, nil
	}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	wh, err := siem.NewWebhook(siem.WebhookConfig{URL: srv.URL, Secret: secret, MaxAttempts: 2,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, wh, prometheus.NewRegistry())
	id := e.raise(t)
	testkit.Eventually(t, 0, "the alert delivered", func() (bool, error) {
		_, got, _ := rcv.state()
		return len(got) == 1 && got[0] == id, nil
	})
	if n, _, bad := rcv.state(); n != 5 || len(bad) != 0 {
		t.Fatalf("requests = %d, problems %v; want 5 (four auth failures retried past MaxAttempts 2)", n, bad)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters = %d, want none", len(dl))
	}
}

// TestWebhookAuthFailuresPastTheGraceAreDeadLettered: a receiver refusing the credentials for
// longer than the grace gets the event dead-lettered, with its response text made printable ASCII
// and bounded in the dead letter's error header.
func TestWebhookAuthFailuresPastTheGraceAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	clock := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	rcv := &receiver{t: t, answer: func(int) (int, http.Header) {
		mu.Lock()
		clock = clock.Add(4 * time.Minute) // each refusal comes four minutes after the last
		mu.Unlock()
		return http.StatusForbidden, nil
	}}
	junk := "bad\x1b[31m token\r\nX-Injected: yes\t\u00e9" + strings.Repeat("z", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rcv.ServeHTTP(&bodyWriter{ResponseWriter: w, body: junk}, r)
	}))
	defer srv.Close()
	wh, err := siem.NewWebhook(siem.WebhookConfig{URL: srv.URL, Secret: secret, MaxAttempts: 20,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, AuthGrace: 10 * time.Minute,
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e.start(t, wh, reg)
	id := e.raise(t)
	testkit.Eventually(t, 0, "a dead letter", func() (bool, error) { return len(e.deadLetters(t)) == 1, nil })
	h := e.deadLetters(t)[0].Header
	// Refusals at 4, 8, 12 and 16 minutes: the grace counts from the first, so the fourth ends it.
	if h.Get(siem.NATSHeaderEventID) != id || h.Get(siem.NATSHeaderAttempts) != "4" || h.Get(siem.NATSHeaderStatus) != "403" {
		t.Fatalf("dead letter headers = %v; want 4 attempts ending in 403", h)
	}
	msg := h.Get(siem.NATSHeaderError)
	if !strings.HasPrefix(msg, "receiver answered 403 Forbidden: bad [31m token X-Injected: yes ??z") || !strings.Contains(msg, "grace for credential rotation") {
		t.Errorf("dead letter error %q: want the sanitised text and the grace", msg)
	}
	for _, c := range []byte(msg) {
		if c < ' ' || c > '~' {
			t.Fatalf("dead letter error %q holds byte %#x", msg, c)
		}
	}
	if z := strings.Count(msg, "z"); z == 0 || len(msg) > 512 {
		t.Errorf("dead letter error of %d bytes (%d z): want the receiver's text cut to %d bytes", len(msg), z, siem.MaxReceiverText)
	}
	if d := testutil.ToFloat64(counter(t, reg, "agentid_monitor_siem_dead_lettered_total", map[string]string{"reason": "refused"})); d != 1 {
		t.Errorf("dead-lettered (refused) = %v, want 1", d)
	}
}

// bodyWriter writes body after the status the wrapped handler chose.
type bodyWriter struct {
	http.ResponseWriter
	body string
}

func (b *bodyWriter) WriteHeader(code int) {
	b.ResponseWriter.WriteHeader(code)
	_, _ = b.ResponseWriter.Write([]byte(b.body))
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"  plain text ", 256, "plain text"},
		{"a\r\nb\x00c\td", 256, "a b c d"},
		{"caf\u00e9", 256, "caf??"},
		{strings.Repeat("x", 300), 256, strings.Repeat("x", 256)},
		{"ab   cd", 3, "ab"},
	}
	for _, tt := range tests {
		if got := siem.Sanitize(tt.in, tt.n); got != tt.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
