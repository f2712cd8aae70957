package detect

import (
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
