package detect

import (
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// DefaultMaxTokens is the default of Config.MaxTokens: about 100 MB, allocated at start. The index
// holds about 100 bytes per token (BenchmarkTokenIndexMemory): a map slot with its 16-byte key and
// 16-byte value at the map's load, the key again in the ring, and a share of the agents' names. It
// held about 200 plus the tenant's, token id's and agent's strings (about 300) when it kept them.
const DefaultMaxTokens = 1_000_000

// TokenSkew is how long after its token's expiry an access may be dated and still be corroborated
// by it (the clocks of the issuer and the resource server).
const TokenSkew = 5 * time.Minute

// issuedToken is what the platform issued under one token id: the agent (a number in the index's
// agent table) and the expiry in Unix nanoseconds (0: not reported).
type issuedToken struct {
	agent   uint32
	expires int64
}

// expiryNanos is an expiry in Unix nanoseconds, 0 for none. Unix nanoseconds reach from 1677 to
// 2262; an expiry beyond them is clamped to the nearer end rather than wrapped, and an expiry that is
// exactly the epoch becomes 1 ns after it, so that it stays "expired long ago", not "none".
func expiryNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minExpiry):
		return 1
	case t.After(maxExpiry):
		return math.MaxInt64
	case t.UnixNano() == 0:
		return 1
	}
	return t.UnixNano()
}

var (
	minExpiry = time.Unix(0, 1)
	maxExpiry = time.Unix(0, math.MaxInt64)
)

// tokenIndex remembers the tokens the issuer reported issuing (token.requested rows, newest
// MaxTokens), so that an access row a resource server reports can be matched with a token the
// platform issued to that agent.
type tokenIndex struct {
	size   int
	byKey  map[store.Key]issuedToken
	ring   []store.Key // the keys in the order learned; filled to size, then the oldest is replaced
	next   int
	agents agentTable
}

// newTokenIndex allocates the index at its size: the map and the ring take their whole budget at
// start (their pages become resident as tokens fill them) rather than growing for as long as it
// takes to issue size tokens (17 minutes at 1,000 tokens/s), so the process reaches its steady
// memory early and never pays for a map growing under load.
func newTokenIndex(size int) *tokenIndex {
	return &tokenIndex{size: size, byKey: make(map[store.Key]issuedToken, size), ring: make([]store.Key, 0, size),
		agents: agentTable{ids: map[string]uint32{}}}
}

// learn remembers the token an issued token request row names.
func (x *tokenIndex) learn(r *store.Event) {
	if r.Kind != store.KindTokenRequested || r.Outcome != "issued" || r.TokenID == "" || r.Agent == "" {
		return
	}
	k := store.KeyOf(r.Tenant, r.TokenID)
	old, known := x.byKey[k]
	if known {
		x.agents.release(old.agent) // named again: the newest row says whose it is
	} else {
		if len(x.ring) < x.size {
			x.ring = append(x.ring, k)
		} else {
			x.forget(x.ring[x.next])
			x.ring[x.next] = k
			x.next = (x.next + 1) % x.size
		}
	}
	x.byKey[k] = issuedToken{agent: x.agents.acquire(r.Agent), expires: expiryNanos(r.TokenExpires)}
}

func (x *tokenIndex) forget(k store.Key) {
	if t, ok := x.byKey[k]; ok {
		x.agents.release(t.agent)
		delete(x.byKey, k)
	}
}

func (x *tokenIndex) knows(tenant, id string) bool {
	_, ok := x.byKey[store.KeyOf(tenant, id)]
	return ok
}

// agentTable numbers the agents of the remembered tokens, so that a token holds 4 bytes instead of a
// name; a number is freed with the last token that holds it, so the table never outgrows the index.
type agentTable struct {
	ids   map[string]uint32
	names []string
	refs  []uint32
	free  []uint32
}

func (a *agentTable) acquire(name string) uint32 {
	if n, ok := a.ids[name]; ok {
		a.refs[n]++
		return n
	}
	name = strings.Clone(name) // not a slice of a larger decoded buffer
	var n uint32
	if k := len(a.free); k > 0 {
		n, a.free = a.free[k-1], a.free[:k-1]
		a.names[n], a.refs[n] = name, 1
	} else {
		n = uint32(len(a.names))
		a.names, a.refs = append(a.names, name), append(a.refs, 1)
	}
	a.ids[name] = n
	return n
}

func (a *agentTable) release(n uint32) {
	if a.refs[n]--; a.refs[n] == 0 {
		delete(a.ids, a.names[n])
		a.names[n] = ""
		a.free = append(a.free, n)
	}
}

func (a *agentTable) name(n uint32) string { return a.names[n] }

// corroborated reports whether a row is backed by the platform: rows the platform itself produces
// (token requests, policy decisions, milestones) are; an access row a resource server reported is
// when it names a token the issuer issued to the row's agent, used before the token expired. why
// says what is missing otherwise.
func (x *tokenIndex) corroborated(r *store.Event) (ok bool, why string) {
	if r.Kind != store.KindAccess {
		return true, ""
	}
	if r.TokenID == "" {
		return false, "the reporter named no token for this access"
	}
	t, known := x.byKey[store.KeyOf(r.Tenant, r.TokenID)]
	switch {
	case !known:
		return false, "token " + r.TokenID + " is not one the platform is known to have issued (issued before the monitor started or beyond the tokens it remembers, or never)"
	case x.agents.name(t.agent) != r.Agent:
		return false, "token " + r.TokenID + " was issued to " + x.agents.name(t.agent) + ", not to " + r.Agent
	case t.expires != 0 && r.Time.After(time.Unix(0, t.expires).Add(TokenSkew)):
		return false, "token " + r.TokenID + " had expired at " + time.Unix(0, t.expires).UTC().Format(time.RFC3339)
	}
	return true, ""
}

// LearnTokens remembers the tokens that stored token request rows issued (read back from the
// telemetry store, whose detail keeps the token id and expiry), e.g. those issued before a restart,
// so that access with them stays corroborated. Rows are taken newest first; it returns how many
// tokens it learned. It does nothing without Config.Corroborate.
func (e *Engine) LearnTokens(rows []store.Event) int {
	if e.tokens == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for i := range rows {
		r := rows[i]
		if r.Kind != store.KindTokenRequested || r.Outcome != "issued" || r.Agent == "" {
			continue
		}
		if r.TokenID == "" {
			var d struct {
				TokenID    string    `json:"token_id"`
				ExpireTime time.Time `json:"expire_time"`
			}
			if json.Unmarshal([]byte(r.Detail), &d) != nil || d.TokenID == "" {
				continue
			}
			r.TokenID, r.TokenExpires = d.TokenID, d.ExpireTime
		}
		if e.tokens.knows(r.Tenant, r.TokenID) {
			continue // a newer row named it already
		}
		e.tokens.learn(&r)
		n++
	}
	return n
}

// MaxTokens is how many issued tokens the engine remembers for corroboration.
func (e *Engine) MaxTokens() int { return e.cfg.MaxTokens }
