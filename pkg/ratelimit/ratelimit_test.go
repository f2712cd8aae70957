package ratelimit_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/ratelimit"
)

// clock is a manual clock for the limiter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, cfg ratelimit.Config) (*ratelimit.Limiter, *clock) {
	t.Helper()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg.Now = c.Now
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func TestLimiterBurstThenRate(t *testing.T) {
	l, c := newLimiter(t, ratelimit.Config{Rate: 2, Burst: 3})
	for i := range 3 {
		if ok, _ := l.Allow("ip1"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, retry := l.Allow("ip1")
	if ok {
		t.Fatal("request beyond the burst allowed")
	}
	if retry != 500*time.Millisecond {
		t.Fatalf("retry after %s, want 500ms (one token at 2/s)", retry)
	}
	if got := ratelimit.RetryAfterSeconds(retry); got != 1 {
		t.Fatalf("Retry-After %d, want 1", got)
	}
	if ok, _ := l.Allow("ip2"); !ok {
		t.Fatal("another key shares the first key's bucket")
	}
	c.Advance(499 * time.Millisecond)
	if ok, _ := l.Allow("ip1"); ok {
		t.Fatal("allowed before a token was refilled")
	}
	c.Advance(2 * time.Millisecond)
	if ok, _ := l.Allow("ip1"); !ok {
		t.Fatal("refused after a token was refilled")
	}
	c.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Allow("ip1"); !ok {
			t.Fatalf("request %d after a long idle time refused: the bucket should be full again", i+1)
		}
	}
	if ok, _ := l.Allow("ip1"); ok {
		t.Fatal("an idle bucket refilled beyond its burst")
	}
}

func TestLimiterConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ratelimit.Config
		wantNil bool
		wantErr bool
	}{
		{name: "zero rate disables", cfg: ratelimit.Config{}, wantNil: true},
		{name: "negative rate", cfg: ratelimit.Config{Rate: -1}, wantErr: true},
		{name: "negative burst", cfg: ratelimit.Config{Rate: 1, Burst: -1}, wantErr: true},
		{name: "negative max keys", cfg: ratelimit.Config{Rate: 1, MaxKeys: -1}, wantErr: true},
		{name: "valid", cfg: ratelimit.Config{Rate: 10, Burst: 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ratelimit.New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (l == nil) != tt.wantNil {
				t.Fatalf("limiter nil = %v, want %v", l == nil, tt.wantNil)
			}
		})
	}
	var off *ratelimit.Limiter
	for range 1000 {
		if ok, _ := off.Allow("k"); !ok {
			t.Fatal("a nil (disabled) limiter refused")
		}
	}
}

func TestLimiterDefaultBurstIsRate(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Config{Rate: 5})
	n := 0
	for {
		ok, _ := l.Allow("k")
		if !ok {
			break
		}
		if n++; n > 100 {
			t.Fatal("no limit")
		}
	}
	if n != 5 {
		t.Fatalf("burst %d, want 5 (the rate)", n)
	}
}

func TestLimiterMemoryBounded(t *testing.T) {
	const maxKeys = 256
	l, c := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 1, MaxKeys: maxKeys})
	for i := range 100 * maxKeys {
		l.Allow("ip-" + strconv.Itoa(i))
		c.Advance(time.Millisecond)
	}
	if n := l.Len(); n > maxKeys {
		t.Fatalf("%d keys remembered, want at most %d", n, maxKeys)
	}
	// A key under attack stays limited while others come and go: it is the most recently used.
	if ok, _ := l.Allow("attacker"); !ok {
		t.Fatal("first request of a new key refused")
	}
	for i := range 10 * maxKeys {
		if ok, _ := l.Allow("attacker"); ok {
			t.Fatalf("attacker allowed again after %d other keys", i)
		}
		l.Allow("other-" + strconv.Itoa(i))
		c.Advance(time.Microsecond)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l, _ := newLimiter(t, ratelimit.Config{Rate: 1, Burst: 100})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if ok, _ := l.Allow("shared"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d requests allowed concurrently, want exactly the burst (100)", allowed)
	}
}

// BenchmarkAllow is the limiter's cost per request: one key per source (the common case of a few
// hot clients) and many keys (a spray of addresses that keeps the limiter evicting).
func BenchmarkAllow(b *testing.B) {
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "10.0." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&0xff)
	}
	for _, bc := range []struct {
		name string
		keys int
	}{{"keys=16", 16}, {"keys=65536-cap=4096", len(keys)}} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := ratelimit.New(ratelimit.Config{Rate: 1e9, Burst: 1e9, MaxKeys: 4096})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l.Allow(keys[i%bc.keys])
					i++
				}
			})
		})
	}
}

func TestSourceKey(t *testing.T) {
	tests := []struct {
		name, addr, want string
	}{
		{"IPv4 with port", "203.0.113.7:4711", "203.0.113.7"},
		{"IPv4 other port is the same source", "203.0.113.7:1", "203.0.113.7"},
		{"bare IPv4", "203.0.113.7", "203.0.113.7"},
		{"IPv4-mapped IPv6", "[::ffff:203.0.113.7]:80", "203.0.113.7"},
		{"IPv6 by its /64", "[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"IPv6 with a zone", "[fe80::1%eth0]:443", "fe80::/64"},
		{"not an IP", "pipe", "pipe"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ratelimit.SourceKey(tc.addr); got != tc.want {
				t.Fatalf("SourceKey(%q) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}
