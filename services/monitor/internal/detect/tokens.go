package detect

import (
	"encoding/json"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// DefaultMaxTokens is the default of Config.MaxTokens: about 200 MB at most.
const DefaultMaxTokens = 1_000_000

// TokenSkew is how long after its token's expiry an access may be dated and still be corroborated
// by it (the clocks of the issuer and the resource server).
const TokenSkew = 5 * time.Minute

// issuedToken is what the platform issued under one token id.
type issuedToken struct {
	agent   string
	expires time.Time
}

type tokenKey struct{ tenant, id string }

// tokenIndex remembers the tokens the issuer reported issuing (token.requested rows, newest
// MaxTokens), so that an access row a resource server reports can be matched with a token the
// platform issued to that agent.
type tokenIndex struct {
	byKey map[tokenKey]issuedToken
	ring  []tokenKey
	next  int
}

func newTokenIndex(size int) *tokenIndex {
	return &tokenIndex{byKey: map[tokenKey]issuedToken{}, ring: make([]tokenKey, size)}
}

// learn remembers the token an issued token request row names.
func (x *tokenIndex) learn(r *store.Event) {
	if r.Kind != store.KindTokenRequested || r.Outcome != "issued" || r.TokenID == "" || r.Agent == "" {
		return
	}
	k := tokenKey{r.Tenant, r.TokenID}
	if _, ok := x.byKey[k]; !ok {
		if old := x.ring[x.next]; old.id != "" {
			delete(x.byKey, old)
		}
		x.ring[x.next] = k
		x.next = (x.next + 1) % len(x.ring)
	}
	x.byKey[k] = issuedToken{agent: r.Agent, expires: r.TokenExpires}
}

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
	t, known := x.byKey[tokenKey{r.Tenant, r.TokenID}]
	switch {
	case !known:
		return false, "token " + r.TokenID + " is not one the platform is known to have issued (issued before the monitor started or beyond the tokens it remembers, or never)"
	case t.agent != r.Agent:
		return false, "token " + r.TokenID + " was issued to " + t.agent + ", not to " + r.Agent
	case !t.expires.IsZero() && r.Time.After(t.expires.Add(TokenSkew)):
		return false, "token " + r.TokenID + " had expired at " + t.expires.UTC().Format(time.RFC3339)
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
		if _, known := e.tokens.byKey[tokenKey{r.Tenant, r.TokenID}]; known {
			continue // a newer row named it already
		}
		e.tokens.learn(&r)
		n++
	}
	return n
}

// MaxTokens is how many issued tokens the engine remembers for corroboration.
func (e *Engine) MaxTokens() int { return e.cfg.MaxTokens }
