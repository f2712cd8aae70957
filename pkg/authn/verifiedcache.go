package authn

import (
	"crypto/sha256"
	"maps"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// verifiedShards is the number of independently locked parts of a verifiedCache.
const verifiedShards = 16

// sweepEvery is the least time between two sweeps of one full shard for expired entries.
const sweepEvery = time.Second

// verifiedCache remembers tokens a JWKSVerifier has verified, keyed by the SHA-256 of the raw token
// (the token itself is never kept). It holds at most its size: each shard holds an equal part, and a
// full shard first forgets its expired entries (at most once per sweepEvery) and otherwise the
// sooner-expiring of two entries picked at random.
type verifiedCache struct {
	perShard int
	shards   []verifiedShard
}

type verifiedShard struct {
	mu      sync.RWMutex
	entries map[[sha256.Size]byte]*verifiedEntry
	swept   time.Time
}

// verifiedEntry is a verified token: its claims, the key that verified them, and the window in which
// the claims are valid. It is never changed once stored.
type verifiedEntry struct {
	claims *Claims
	tenant string
	kid    string
	alg    jose.SignatureAlgorithm
	gen    uint64 // generation of the key when the token was verified
	from   int64  // unix ns: valid from (latest of nbf and iat, minus leeway)
	until  int64  // unix ns: valid before (exp plus leeway)
}

func newVerifiedCache(size int) *verifiedCache {
	n := min(verifiedShards, size)
	c := &verifiedCache{perShard: size / n, shards: make([]verifiedShard, n)}
	for i := range c.shards {
		c.shards[i].entries = make(map[[sha256.Size]byte]*verifiedEntry)
	}
	return c
}

// newVerifiedEntry remembers claims verified with key kid of tenant's issuer; claims must be a copy
// no caller holds.
func newVerifiedEntry(claims *Claims, tenant, kid string, alg jose.SignatureAlgorithm, gen uint64, leeway time.Duration) *verifiedEntry {
	from := claims.IssuedAt
	if claims.NotBefore.After(from) {
		from = claims.NotBefore
	}
	return &verifiedEntry{
		claims: claims, tenant: tenant, kid: kid, alg: alg, gen: gen,
		from:  from.Add(-leeway).UnixNano(),
		until: claims.Expiry.Add(leeway).UnixNano(),
	}
}

// validAt reports whether the claims' times accept the token at now, as the full verification would.
func (e *verifiedEntry) validAt(now time.Time) bool {
	n := now.UnixNano()
	return n >= e.from && n < e.until
}

func (c *verifiedCache) shard(sum [sha256.Size]byte) *verifiedShard {
	return &c.shards[int(sum[0])%len(c.shards)]
}

func (c *verifiedCache) get(sum [sha256.Size]byte) (*verifiedEntry, bool) {
	s := c.shard(sum)
	s.mu.RLock()
	e, ok := s.entries[sum]
	s.mu.RUnlock()
	return e, ok
}

// remove forgets sum if it still maps to e.
func (c *verifiedCache) remove(sum [sha256.Size]byte, e *verifiedEntry) {
	s := c.shard(sum)
	s.mu.Lock()
	if s.entries[sum] == e {
		delete(s.entries, sum)
	}
	s.mu.Unlock()
}

func (c *verifiedCache) put(sum [sha256.Size]byte, e *verifiedEntry, now time.Time) {
	if e == nil || !e.validAt(now) {
		return
	}
	s := c.shard(sum)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[sum]; !ok && len(s.entries) >= c.perShard {
		s.evictLocked(now)
	}
	s.entries[sum] = e
}

// evictLocked makes room for one entry: it forgets the expired entries when the shard was not swept
// within sweepEvery, and else (or when none had expired) the sooner-expiring of two random entries.
func (s *verifiedShard) evictLocked(now time.Time) {
	if now.Sub(s.swept) >= sweepEvery || now.Before(s.swept) {
		s.swept = now
		n := now.UnixNano()
		before := len(s.entries)
		maps.DeleteFunc(s.entries, func(_ [sha256.Size]byte, e *verifiedEntry) bool { return n >= e.until })
		if len(s.entries) < before {
			return
		}
	}
	// Map iteration starts at a random place: the first two entries are a random pair.
	var victim [sha256.Size]byte
	var victimUntil int64
	seen := 0
	for k, e := range s.entries {
		if seen == 0 || e.until < victimUntil {
			victim, victimUntil = k, e.until
		}
		if seen++; seen == 2 {
			break
		}
	}
	delete(s.entries, victim)
}

// len returns the number of cached tokens.
func (c *verifiedCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.entries)
		s.mu.RUnlock()
	}
	return n
}

// clone returns a deep copy of c that shares nothing mutable with it.
func (c *Claims) clone() *Claims {
	out := *c
	out.Audience = slices.Clone(c.Audience)
	out.Roles = slices.Clone(c.Roles)
	if c.Act != nil {
		out.Act = cloneJSONObject(c.Act)
	}
	if c.Confirmation != nil {
		cnf := *c.Confirmation
		out.Confirmation = &cnf
	}
	return &out
}

func cloneJSONObject(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneJSONValue(v)
	}
	return out
}

func cloneJSONValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneJSONObject(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneJSONValue(e)
		}
		return out
	default:
		return v
	}
}
