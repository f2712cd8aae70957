package detect

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

func issued(tenant, agent, id string, exp time.Time) *store.Event {
	return &store.Event{Kind: store.KindTokenRequested, Outcome: "issued", Tenant: tenant, Agent: agent, TokenID: id, TokenExpires: exp}
}

func access(tenant, agent, id string, at time.Time) *store.Event {
	return &store.Event{Kind: store.KindAccess, Tenant: tenant, Agent: agent, TokenID: id, Time: at}
}

// TestTokenIndexKeepsTheNewestAndFreesAgents: the index keeps the newest size tokens; the agents'
// table holds only the agents of the tokens kept, so agents that come and go do not grow it.
func TestTokenIndexKeepsTheNewestAndFreesAgents(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	x := newTokenIndex(3)
	for i := range 10 {
		x.learn(issued("acme", fmt.Sprintf("agent-%d", i), fmt.Sprintf("jti-%d", i), t0.Add(time.Hour)))
	}
	for i := range 10 {
		ok, why := x.corroborated(access("acme", fmt.Sprintf("agent-%d", i), fmt.Sprintf("jti-%d", i), t0))
		if want := i >= 7; ok != want {
			t.Errorf("token %d corroborated = %v (%s), want %v: the index keeps the newest 3", i, ok, why, want)
		}
	}
	if len(x.byKey) != 3 || len(x.ring) != 3 || len(x.agents.ids) != 3 {
		t.Fatalf("index holds %d tokens, %d ring slots, %d agents; want 3 of each", len(x.byKey), len(x.ring), len(x.agents.ids))
	}
	if len(x.agents.names) > 4 {
		t.Fatalf("agent table grew to %d slots for 3 live agents", len(x.agents.names))
	}
	// One agent holding every token keeps one name, freed with its last token.
	for i := range 3 {
		x.learn(issued("acme", "agent-shared", fmt.Sprintf("s-%d", i), t0.Add(time.Hour)))
	}
	if len(x.agents.ids) != 1 || x.agents.refs[x.agents.ids["agent-shared"]] != 3 {
		t.Fatalf("agents %v refs %v, want agent-shared held by 3 tokens", x.agents.ids, x.agents.refs)
	}
}

// TestTokenIndexTheNewestRowSaysWhose: a token id named again takes the newest row's agent and
// expiry, and the previous agent's name is released.
func TestTokenIndexTheNewestRowSaysWhose(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	x := newTokenIndex(10)
	x.learn(issued("acme", "agent-a", "jti", t0))
	x.learn(issued("acme", "agent-b", "jti", t0.Add(time.Hour)))
	if ok, why := x.corroborated(access("acme", "agent-a", "jti", t0)); ok || !strings.Contains(why, "was issued to agent-b, not to agent-a") {
		t.Fatalf("access by agent-a corroborated=%v (%s), want refused naming agent-b", ok, why)
	}
	if ok, why := x.corroborated(access("acme", "agent-b", "jti", t0.Add(time.Hour+TokenSkew))); !ok {
		t.Fatalf("access by agent-b within the new expiry and skew refused: %s", why)
	}
	if _, held := x.agents.ids["agent-a"]; held || len(x.byKey) != 1 || len(x.ring) != 1 {
		t.Fatalf("agent-a still named (%v) or the token counted twice (%d, ring %d)", x.agents.ids, len(x.byKey), len(x.ring))
	}
}

// TestTokenIndexKeepsTheExpiryExactly: the expiry is kept to the nanosecond, and a token without
// one is not refused for it.
func TestTokenIndexKeepsTheExpiryExactly(t *testing.T) {
	exp := time.Date(2026, 11, 30, 3, 0, 0, 999, time.UTC)
	x := newTokenIndex(10)
	x.learn(issued("acme", "agent-a", "jti", exp))
	if ok, _ := x.corroborated(access("acme", "agent-a", "jti", exp.Add(TokenSkew))); !ok {
		t.Fatal("an access at exactly expiry+skew refused")
	}
	if ok, why := x.corroborated(access("acme", "agent-a", "jti", exp.Add(TokenSkew+time.Nanosecond))); ok || !strings.Contains(why, "had expired") {
		t.Fatalf("an access a nanosecond past expiry+skew corroborated=%v (%s)", ok, why)
	}
	x.learn(issued("acme", "agent-a", "no-exp", time.Time{}))
	if ok, why := x.corroborated(access("acme", "agent-a", "no-exp", exp.Add(1000*time.Hour))); !ok {
		t.Fatalf("a token without a reported expiry refused: %s", why)
	}
	// Expiries Unix nanoseconds cannot hold are clamped, not wrapped; the epoch is not "none".
	for _, tt := range []struct {
		name    string
		expires time.Time
		at      time.Time
		want    bool
	}{
		{"the epoch", time.Unix(0, 0), exp, false},
		{"before 1678", time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), exp, false},
		{"year 9999", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), exp, true},
		{"2554, where nanoseconds wrap to 0", time.Unix(0, 0).Add(time.Duration(math.MaxInt64)).Add(time.Duration(math.MaxInt64)).Add(2), exp, true},
	} {
		x.learn(issued("acme", "agent-a", tt.name, tt.expires))
		if ok, why := x.corroborated(access("acme", "agent-a", tt.name, tt.at)); ok != tt.want {
			t.Errorf("%s: corroborated = %v (%s), want %v", tt.name, ok, why, tt.want)
		}
	}
}

// TestTokenIndexEvictsARelearnedKeyOnce: a key learned again keeps its one place in the ring; when
// that place is reused, the agent of the newest row is released and the index stays consistent.
func TestTokenIndexEvictsARelearnedKeyOnce(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	x := newTokenIndex(2)
	x.learn(issued("acme", "agent-a", "jti-1", t0))
	x.learn(issued("acme", "agent-b", "jti-1", t0)) // re-learned: agent-a released
	x.learn(issued("acme", "agent-c", "jti-2", t0))
	x.learn(issued("acme", "agent-d", "jti-3", t0)) // evicts jti-1, releasing agent-b
	if _, ok := x.agents.ids["agent-b"]; ok || len(x.agents.ids) != 2 || len(x.byKey) != 2 {
		t.Fatalf("agents %v, %d tokens after evicting the re-learned token; want agent-c and agent-d, 2 tokens", x.agents.ids, len(x.byKey))
	}
	for _, a := range x.agents.ids {
		if x.agents.refs[a] != 1 {
			t.Fatalf("agent refs %v, want 1 each", x.agents.refs)
		}
	}
	if ok, _ := x.corroborated(access("acme", "agent-b", "jti-1", t0)); ok {
		t.Fatal("an evicted token is still corroborated")
	}
}

// BenchmarkTokenIndexMemory reports the heap the index holds per token when full (tokenBytes and
// DefaultMaxTokens's comment follow from it): go test -run - -bench TokenIndexMemory ./services/monitor/internal/detect/
func BenchmarkTokenIndexMemory(b *testing.B) {
	const n = 1_000_000
	rows := make([]store.Event, n)
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	for i := range rows {
		rows[i] = *issued("tenant-"+fmt.Sprint(i%10), fmt.Sprintf("tenants/t/agents/agent-%d", i%10_000),
			fmt.Sprintf("0b9c6e2a-4f1d-4c8e-9a7b-%012d", i), t0)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := newTokenIndex(n)
		for i := range rows {
			x.learn(&rows[i])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/token")
		runtime.KeepAlive(x)
	}
}
