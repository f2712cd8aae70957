package authn

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// RevocationChecker refuses tokens that have been revoked. Check returns nil for a token that is not
// revoked and an Unauthenticated *errs.Error with reason ReasonTokenRevoked for one that is. kid is
// the signing key id of the token's JWT header.
type RevocationChecker interface {
	Check(c *Claims, kid string) error
}

// DefaultRevocationRetention is how long a Denylist keeps an entry after its expire_time by default: a
// verifier accepts tokens up to its leeway past exp, so the entry must outlive the token by as much.
const DefaultRevocationRetention = time.Minute

// DenylistConfig configures a Denylist.
type DenylistConfig struct {
	// Retention is how long an entry is kept after its expire_time; at least the verifier's leeway.
	// Default DefaultRevocationRetention.
	Retention time.Duration
	// PruneInterval is the least time between two prunes done by Apply; default one minute.
	PruneInterval time.Duration
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// Denylist holds the revocations (issuerv1.TokensRevoked events) that can still cover an unexpired
// token and refuses the tokens they cover. Applying an event is idempotent and order-independent;
// entries are forgotten once their expire_time (plus the retention) has passed, so memory is bounded
// by what is revoked within one token lifetime. It is safe for concurrent use; Check takes a read lock
// and does not allocate unless the token is revoked.
type Denylist struct {
	retention  time.Duration
	pruneEvery time.Duration
	now        func() time.Time

	mu       sync.RWMutex
	tokens   map[scoped]int64     // tenant+jti → forget after (unix ns)
	keys     map[scoped]int64     // tenant+kid → forget after
	clients  map[scoped]notBefore // tenant+client_id
	agents   map[scoped]notBefore // tenant+agent
	subjects map[scoped]notBefore // tenant+sub
	tenants  map[string]notBefore // tenant
	ckeys    map[clientKey]notBefore
	pruned   time.Time

	position atomic.Uint64 // highest stream sequence applied
	applied  atomic.Uint64 // events applied (including re-applied and ignored ones)
}

var _ RevocationChecker = (*Denylist)(nil)

// scoped is a value within one tenant; struct keys keep map lookups allocation-free.
type scoped struct{ tenant, value string }

// clientKey is one key (RFC 7638 thumbprint) of one client of a tenant.
type clientKey struct{ tenant, client, thumbprint string }

// notBefore revokes tokens issued at or before at (unix ns); forget is when the entry may go.
type notBefore struct{ at, forget int64 }

func (n notBefore) merge(o notBefore) notBefore {
	return notBefore{at: max(n.at, o.at), forget: max(n.forget, o.forget)}
}

// NewDenylist returns an empty Denylist.
func NewDenylist(cfg DenylistConfig) *Denylist {
	d := &Denylist{
		retention:  cfg.Retention,
		pruneEvery: cfg.PruneInterval,
		now:        cfg.Now,
		tokens:     make(map[scoped]int64),
		keys:       make(map[scoped]int64),
		clients:    make(map[scoped]notBefore),
		agents:     make(map[scoped]notBefore),
		subjects:   make(map[scoped]notBefore),
		tenants:    make(map[string]notBefore),
		ckeys:      make(map[clientKey]notBefore),
	}
	if d.retention <= 0 {
		d.retention = DefaultRevocationRetention
	}
	if d.pruneEvery <= 0 {
		d.pruneEvery = time.Minute
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.pruned = d.now()
	return d
}

// ValidateRevocation checks that ev names a tenant and the value its target needs (token_id,
// client_id, agent, subject or key_id; not_before for the targets that cover tokens by issue time)
// and has an expire_time.
func ValidateRevocation(ev *issuerv1.TokensRevoked) error {
	if ev == nil {
		return errors.New("authn: revocation is nil")
	}
	if !ValidTenant(ev.GetTenant()) {
		return fmt.Errorf("authn: revocation tenant %q is not a valid tenant id", ev.GetTenant())
	}
	if !ev.GetExpireTime().IsValid() {
		return fmt.Errorf("authn: revocation (%s) has no valid expire_time", ev.GetTarget())
	}
	needNotBefore := true
	var value, field string
	switch ev.GetTarget() {
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
		value, field, needNotBefore = ev.GetTokenId(), "token_id", false
	case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
		value, field, needNotBefore = ev.GetKeyId(), "key_id", false
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
		value, field = ev.GetClientId(), "client_id"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
		value, field = ev.GetAgent(), "agent"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
		value, field = ev.GetSubject(), "subject"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT:
		value, field = ev.GetTenant(), "tenant"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY:
		value, field = ev.GetClientId(), "client_id"
		if ev.GetClientKeyThumbprint() == "" {
			return fmt.Errorf("authn: %s revocation has no client_key_thumbprint", ev.GetTarget())
		}
	default:
		return fmt.Errorf("authn: revocation target %s is not supported", ev.GetTarget())
	}
	if value == "" {
		return fmt.Errorf("authn: %s revocation has no %s", ev.GetTarget(), field)
	}
	if needNotBefore && !ev.GetNotBefore().IsValid() {
		return fmt.Errorf("authn: %s revocation has no valid not_before", ev.GetTarget())
	}
	return nil
}

// Apply records the revocation ev, stored at stream sequence seq (0 when it has none). Applying the
// same event again, or events in any order, leaves the same state: per value the latest not_before and
// expire_time win. An event whose expire_time (plus retention) has passed is counted but not kept. It
// fails, changing nothing, when ev is malformed (see ValidateRevocation).
func (d *Denylist) Apply(ev *issuerv1.TokensRevoked, seq uint64) error {
	if err := ValidateRevocation(ev); err != nil {
		return err
	}
	now := d.now()
	forget := ev.GetExpireTime().AsTime().Add(d.retention).UnixNano()
	keep := forget > now.UnixNano()
	d.mu.Lock()
	if keep {
		d.applyLocked(ev, forget)
	}
	if now.Sub(d.pruned) >= d.pruneEvery {
		d.pruneLocked(now)
	}
	d.mu.Unlock()
	d.applied.Add(1)
	for {
		cur := d.position.Load()
		if seq <= cur || d.position.CompareAndSwap(cur, seq) {
			break
		}
	}
	return nil
}

func (d *Denylist) applyLocked(ev *issuerv1.TokensRevoked, forget int64) {
	tenant := ev.GetTenant()
	nb := notBefore{forget: forget}
	if ev.GetNotBefore().IsValid() {
		nb.at = ev.GetNotBefore().AsTime().UnixNano()
	}
	mergeInto := func(m map[scoped]notBefore, value string) {
		k := scoped{tenant, value}
		m[k] = m[k].merge(nb)
	}
	switch ev.GetTarget() {
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
		k := scoped{tenant, ev.GetTokenId()}
		d.tokens[k] = max(d.tokens[k], forget)
	case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
		k := scoped{tenant, ev.GetKeyId()}
		d.keys[k] = max(d.keys[k], forget)
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
		mergeInto(d.clients, ev.GetClientId())
	case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
		mergeInto(d.agents, ev.GetAgent())
	case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
		mergeInto(d.subjects, ev.GetSubject())
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT:
		d.tenants[tenant] = d.tenants[tenant].merge(nb)
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY:
		k := clientKey{tenant, ev.GetClientId(), ev.GetClientKeyThumbprint()}
		d.ckeys[k] = d.ckeys[k].merge(nb)
	}
}

// Check returns an Unauthenticated *errs.Error (reason ReasonTokenRevoked) when a revocation covers the
// token with claims c signed with key kid: its jti, its signing key, its client key (ckt), or its client, agent, subject or
// tenant with a not_before at or after the token's iat. Only revocations of the token's own tenant
// apply. A token without iat is covered by every not_before revocation of its client, agent, subject
// or tenant.
func (d *Denylist) Check(c *Claims, kid string) error {
	if c == nil {
		return revoked("no claims")
	}
	t := c.Tenant
	iat := c.IssuedAt.UnixNano()
	if c.IssuedAt.IsZero() {
		iat = 0
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	switch {
	case c.ID != "" && d.tokens[scoped{t, c.ID}] != 0:
		return revoked("token id")
	case kid != "" && d.keys[scoped{t, kid}] != 0:
		return revoked("signing key")
	case covers(d.tenants[t], iat):
		return revoked("tenant")
	case c.ClientID != "" && covers(d.clients[scoped{t, c.ClientID}], iat):
		return revoked("client")
	case c.Agent != "" && covers(d.agents[scoped{t, c.Agent}], iat):
		return revoked("agent")
	case c.Subject != "" && covers(d.subjects[scoped{t, c.Subject}], iat):
		return revoked("subject")
	case c.ClientKeyThumbprint != "" && len(d.ckeys) > 0 && covers(d.ckeys[clientKey{t, c.ClientID, c.ClientKeyThumbprint}], iat):
		return revoked("client key")
	}
	return nil
}

func covers(n notBefore, iat int64) bool { return n.forget != 0 && iat <= n.at }

func revoked(what string) error {
	return errs.Unauthenticated(ReasonTokenRevoked, "access token has been revoked").
		WithCause(fmt.Errorf("revoked by %s", what))
}

// Prune forgets the entries whose expire_time plus retention has passed and returns how many it
// forgot. Apply prunes at most once per PruneInterval; a long-lived holder may call Prune on a ticker
// so that memory shrinks also when no revocation arrives.
func (d *Denylist) Prune() int {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pruneLocked(now)
}

func (d *Denylist) pruneLocked(now time.Time) int {
	d.pruned = now
	cut := now.UnixNano()
	n := 0
	for k, f := range d.tokens {
		if f <= cut {
			delete(d.tokens, k)
			n++
		}
	}
	for k, f := range d.keys {
		if f <= cut {
			delete(d.keys, k)
			n++
		}
	}
	for _, m := range []map[scoped]notBefore{d.clients, d.agents, d.subjects} {
		for k, e := range m {
			if e.forget <= cut {
				delete(m, k)
				n++
			}
		}
	}
	for k, e := range d.tenants {
		if e.forget <= cut {
			delete(d.tenants, k)
			n++
		}
	}
	for k, e := range d.ckeys {
		if e.forget <= cut {
			delete(d.ckeys, k)
			n++
		}
	}
	return n
}

// Len returns the number of entries held.
func (d *Denylist) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.tokens) + len(d.keys) + len(d.clients) + len(d.agents) + len(d.subjects) + len(d.tenants) + len(d.ckeys)
}

// Position returns the highest stream sequence applied so far (0 before the first).
func (d *Denylist) Position() uint64 { return d.position.Load() }

// Applied returns how many events Apply has accepted, including repeated and already expired ones.
func (d *Denylist) Applied() uint64 { return d.applied.Load() }
