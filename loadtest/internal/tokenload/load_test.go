package tokenload_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/loadtest/internal/tokenload"
)

// tokenEndpoint answers tokens for registered client ids and invalid_client for the others, and
// remembers every assertion it saw.
type tokenEndpoint struct {
	known    map[string]bool
	mu       sync.Mutex
	seen     map[string]bool
	inFlight atomic.Int64
	maxIn    atomic.Int64
	delay    time.Duration
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := e.inFlight.Add(1)
	defer e.inFlight.Add(-1)
	for m := e.maxIn.Load(); n > m && !e.maxIn.CompareAndSwap(m, n); m = e.maxIn.Load() {
	}
	time.Sleep(e.delay)
	_ = r.ParseForm()
	e.mu.Lock()
	e.seen[r.PostForm.Get("client_assertion")] = true
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if !e.known[r.PostForm.Get("client_id")] {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 600})
}

func loadSetup(t *testing.T, good, bad int) (tokenload.LoadConfig, *tokenEndpoint) {
	t.Helper()
	e := &tokenEndpoint{known: map[string]bool{}, seen: map[string]bool{}}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	cfg := tokenload.LoadConfig{
		Client: &tokenclient.Client{HTTP: tokenclient.NewHTTPClient(8, 5*time.Second), TokenURL: srv.URL + "/t/default/oauth2/token",
			Audience: srv.URL + "/t/default"},
		Concurrency: 3,
		Duration:    time.Minute,
	}
	for i := range good + bad {
		id, err := tokenclient.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		id.ClientID = "agt_" + string(rune('a'+i))
		e.known[id.ClientID] = i < good
		cfg.Identities = append(cfg.Identities, id)
	}
	return cfg, e
}

func TestLoadSendsExactlyTheRequestedCount(t *testing.T) {
	cfg, e := loadSetup(t, 2, 1)
	cfg.Requests = 300
	res := tokenload.Load(context.Background(), cfg)
	if res.Requests != 300 || res.OK != 200 || res.Errors["invalid_client"] != 100 || len(res.Errors) != 1 {
		t.Fatalf("requests %d ok %d errors %v; want 300, 200 and exactly invalid_client 100 (one agent in three is unknown)",
			res.Requests, res.OK, res.Errors)
	}
	if res.Latency.Count() != 200 {
		t.Errorf("latency samples = %d, want one per successful request (200)", res.Latency.Count())
	}
	if len(e.seen) != 300 {
		t.Errorf("endpoint saw %d distinct assertions, want 300 (a fresh one per request)", len(e.seen))
	}
	if got := e.maxIn.Load(); got > 3 {
		t.Errorf("up to %d requests in flight, want at most the concurrency 3", got)
	}
	tok := tokenload.TokensOf(res)
	if tok.ErrorCount != 100 || tok.OK != 200 || tok.TokensPerSecond <= 0 {
		t.Errorf("TokensOf = %+v", tok)
	}
	s := tok.Latency
	if !(s.Min <= s.P50 && s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.Max) {
		t.Errorf("percentiles out of order: %+v", s)
	}
}

func TestLoadUsesEachPreSignedAssertionOnce(t *testing.T) {
	cfg, e := loadSetup(t, 2, 0)
	as, err := tokenload.PreSign(context.Background(), cfg.Identities, cfg.Client.Audience, 50)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Assertions = as
	cfg.Requests = 80 // more than were signed: the pre-signed ones bound the run
	res := tokenload.Load(context.Background(), cfg)
	if res.Requests != 50 || res.OK != 50 {
		t.Fatalf("requests %d ok %d errors %v; want exactly the 50 pre-signed", res.Requests, res.OK, res.Errors)
	}
	for _, a := range as {
		if !e.seen[a] {
			t.Fatalf("pre-signed assertion %.20s... was never sent", a)
		}
	}
	if len(e.seen) != 50 {
		t.Fatalf("endpoint saw %d distinct assertions, want the 50 pre-signed", len(e.seen))
	}
}

func TestLoadStopsAtTheDuration(t *testing.T) {
	cfg, _ := loadSetup(t, 1, 0)
	cfg.Duration = 200 * time.Millisecond
	start := time.Now()
	res := tokenload.Load(context.Background(), cfg)
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("a 200ms run took %v", took)
	}
	if res.Requests == 0 || res.Requests != res.OK {
		t.Errorf("requests %d ok %d errors %v; want some, all ok", res.Requests, res.OK, res.Errors)
	}
}

func TestLoadOpenLoopNeverExceedsTheRate(t *testing.T) {
	cfg, _ := loadSetup(t, 1, 0)
	cfg.Rate, cfg.Duration = 100, 300*time.Millisecond // at most 30 starts
	res := tokenload.Load(context.Background(), cfg)
	if res.Requests < 1 || res.Requests > 30 {
		t.Errorf("open loop at 100/s for 300ms sent %d requests, want 1..30", res.Requests)
	}
	cfg.Rate, cfg.Duration, cfg.Requests = 1000, time.Minute, 40
	if res := tokenload.Load(context.Background(), cfg); res.Requests != 40 || res.OK != 40 {
		t.Errorf("open loop with --requests 40 sent %d (ok %d), want exactly 40", res.Requests, res.OK)
	}
}

func TestLoadStopsWhenTheContextEnds(t *testing.T) {
	for _, rate := range []float64{0, 50} {
		cfg, e := loadSetup(t, 1, 0)
		e.delay = 20 * time.Millisecond
		cfg.Rate = rate
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		res := tokenload.Load(ctx, cfg) // Duration is a minute: the context ends first
		cancel()
		if res.Elapsed > 30*time.Second {
			t.Fatalf("rate %g: Load ran %v after its context ended", rate, res.Elapsed)
		}
		if res.Requests != res.OK+sum(res.Errors) || len(res.Errors) != 0 {
			t.Errorf("rate %g: requests %d ok %d errors %v; cut-short requests must not count as errors", rate, res.Requests, res.OK, res.Errors)
		}
	}
}

func sum(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}
