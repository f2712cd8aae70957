// Package ratelimit holds keyed token buckets (per source IP, per client id, per principal) in bounded
// memory: a Limiter keeps at most MaxKeys buckets, split into shards, and makes room for a new key
// by evicting the least recently used of a few sampled buckets (a full, idle bucket first: forgetting
// it changes nothing, since a new bucket starts full too).
//
// A nil *Limiter allows everything, so that a rate of 0 ("off") needs no special case at call sites.
package ratelimit

import (
	"errors"
	"hash/maphash"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultMaxKeys bounds the buckets of a Limiter when Config.MaxKeys is 0.
	DefaultMaxKeys = 65536
	shards         = 32
	evictSample    = 8
)

// Config configures a Limiter.
type Config struct {
	// Rate is how many requests per second a key may make in the long run; 0 disables the limiter
	// (New returns nil).
	Rate float64
	// Burst is how many requests a key may make at once; default the rate rounded up, at least 1.
	Burst int
	// MaxKeys bounds how many keys are remembered; default DefaultMaxKeys.
	MaxKeys int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Limiter is a set of token buckets, one per key. It is safe for concurrent use.
type Limiter struct {
	rate     float64 // tokens per nanosecond
	burst    float64
	perShard int
	now      func() time.Time
	seed     maphash.Seed
	shards   [shards]shard
}

type shard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last update
}

// New returns a Limiter, or nil (allow everything) when cfg.Rate is 0.
func New(cfg Config) (*Limiter, error) {
	switch {
	case cfg.Rate == 0:
		return nil, nil
	case cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0):
		return nil, errors.New("ratelimit: Rate must be a positive number of requests per second (0 disables)")
	case cfg.Burst < 0:
		return nil, errors.New("ratelimit: Burst must not be negative")
	case cfg.MaxKeys < 0:
		return nil, errors.New("ratelimit: MaxKeys must not be negative")
	}
	if cfg.Burst == 0 {
		cfg.Burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{rate: cfg.Rate / float64(time.Second), burst: float64(cfg.Burst),
		perShard: max(1, cfg.MaxKeys/shards), now: cfg.Now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l, nil
}

// Allow takes one token from key's bucket. When the bucket is empty it returns false and how long
// until a token is available (at least one second's fraction, never 0). A nil Limiter allows.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now().UnixNano()
	s := &l.shards[maphash.String(l.seed, key)%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, found := s.buckets[key]
	if !found {
		if len(s.buckets) >= l.perShard {
			l.evict(s, now)
		}
		b = &bucket{tokens: l.burst, last: now}
		s.buckets[key] = b
	} else if elapsed := now - b.last; elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+float64(elapsed)*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / l.rate))
	return false, max(wait, time.Nanosecond)
}

// evict removes one bucket of s: a sampled bucket that has refilled completely (it is as good as
// new), else the least recently used of the sample. Go's map iteration order is random, so the
// sample is too.
func (l *Limiter) evict(s *shard, now int64) {
	var victim string
	oldest := int64(math.MaxInt64)
	n := 0
	for k, b := range s.buckets {
		if b.tokens+float64(now-b.last)*l.rate >= l.burst {
			victim = k
			break
		}
		if b.last < oldest {
			victim, oldest = k, b.last
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(s.buckets, victim)
}

// Len is how many keys the limiter remembers.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// RetryAfterSeconds is d rounded up to whole seconds, at least 1: the value of a Retry-After header.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// SourceKey is the rate-limit key of a remote address (host:port or a bare host): the IP without
// its port, an IPv6 address by its /64 (one subscriber's block), or the whole address when it is no
// IP. The port never counts: a client opening new connections stays one source.
func SourceKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}
