package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/agentid/agentid/pkg/errs"
)

// Reason codes of sender-constraint failures at a resource server (kind Unauthenticated unless noted).
const (
	// ReasonCertificateBinding means the token is bound to a TLS client certificate (cnf x5t#S256) and
	// the request came without that certificate.
	ReasonCertificateBinding = "CERT_BINDING_MISMATCH"
	// ReasonDPoPBoundAsBearer means a DPoP-bound token (cnf.jkt) was presented with the Bearer scheme.
	ReasonDPoPBoundAsBearer = "DPOP_BOUND_AS_BEARER"
	// ReasonDPoPSchemeUnbound means the DPoP scheme was used with a token that is not DPoP-bound.
	ReasonDPoPSchemeUnbound = "DPOP_SCHEME_UNBOUND"
	// ReasonDPoPUnsupported means a DPoP-bound token was presented over gRPC, where proofs are not
	// checked, for a method not configured to accept it.
	ReasonDPoPUnsupported = "DPOP_UNSUPPORTED"
	// ReasonDPoPReplayCacheFull (kind Unavailable) means the replay cache cannot take another proof,
	// so single use cannot be guaranteed; retry later.
	ReasonDPoPReplayCacheFull = "DPOP_REPLAY_CACHE_FULL"
	// ReasonDPoPKeyOverQuota means the proof's key already has as many live proofs in the replay cache
	// as one key may have; only that key is refused (invalid_dpop_proof) until some expire.
	ReasonDPoPKeyOverQuota = "DPOP_KEY_OVER_QUOTA"
)

// Token bindings as reported in access telemetry.
const (
	// BindingBearer is an unbound token presented with the Bearer scheme.
	BindingBearer = "bearer"
	// BindingDPoP is a DPoP-bound token presented with a valid proof.
	BindingDPoP = "dpop"
	// BindingMTLS is a token bound to the client's TLS certificate (RFC 8705).
	BindingMTLS = "mtls"
)

// CertificateThumbprint returns the RFC 8705 x5t#S256 of a certificate: base64url (no padding) of the
// SHA-256 of its DER encoding.
func CertificateThumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckCertificateBinding checks that a token bound to a certificate (cnf x5t#S256) is presented over
// a TLS connection whose client certificate has that thumbprint. Tokens without the binding pass. It
// returns an Unauthenticated *errs.Error with ReasonCertificateBinding otherwise.
func CheckCertificateBinding(c *Claims, state *tls.ConnectionState) error {
	if c == nil || c.Confirmation == nil || c.Confirmation.X5TS256 == "" {
		return nil
	}
	if state == nil || len(state.PeerCertificates) == 0 {
		return errs.Unauthenticated(ReasonCertificateBinding, "access token is invalid").
			WithCause(errors.New("token is bound to a client certificate; the request has none"))
	}
	got := CertificateThumbprint(state.PeerCertificates[0])
	if subtle.ConstantTimeCompare([]byte(got), []byte(c.Confirmation.X5TS256)) != 1 {
		return errs.Unauthenticated(ReasonCertificateBinding, "access token is invalid").
			WithCause(errors.New("client certificate thumbprint does not match cnf x5t#S256"))
	}
	return nil
}

// DPoPReplayCache makes DPoP proof ids single-use at a resource server. Use records key (the proof's
// key thumbprint and jti, "jkt:jti") until the time given and reports whether it was unused; an
// error means the answer is unknown, and the proof is refused. An error of kind ResourceExhausted
// refuses only this proof's key (ReasonDPoPKeyOverQuota); any other error refuses as unavailable. A
// shared implementation (e.g. a JetStream key-value bucket) makes proofs single-use across replicas
// of a resource server.
type DPoPReplayCache interface {
	Use(ctx context.Context, key string, until time.Time) (fresh bool, err error)
}

// DefaultDPoPReplayEntries bounds the in-memory DPoP replay cache by default.
const DefaultDPoPReplayEntries = 100_000

// MemoryDPoPReplayCache is a bounded in-process DPoPReplayCache. Entries are forgotten once their
// time has passed; it never forgets a live one, so a proof can never be replayed. One proof key (the
// part of a key before its first ':', the jkt of the middleware's "jkt:jti") may hold at most a
// tenth of the entries: over that quota only its proofs are refused (ResourceExhausted,
// ReasonDPoPKeyOverQuota), so one client sending fresh proofs cannot fill the cache for everyone.
// When the cache holds max live entries it refuses new proofs (Unavailable).
type MemoryDPoPReplayCache struct {
	max    int
	perKey int
	now    func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time
	live  map[string]int // entries of seen by proof key
	order []replayEntry  // in insertion order; expiries are nearly monotonic
	head  int
	swept time.Time // of the last sweepThrottledLocked
}

type replayEntry struct {
	key   string
	until time.Time
}

var _ DPoPReplayCache = (*MemoryDPoPReplayCache)(nil)

// NewMemoryDPoPReplayCache returns an in-memory replay cache holding at most entries live proofs
// (DefaultDPoPReplayEntries when entries <= 0), at most entries/10 (at least 1) of one proof key.
func NewMemoryDPoPReplayCache(entries int) *MemoryDPoPReplayCache {
	if entries <= 0 {
		entries = DefaultDPoPReplayEntries
	}
	return &MemoryDPoPReplayCache{max: entries, perKey: max(1, entries/10), now: time.Now,
		seen: make(map[string]time.Time), live: make(map[string]int)}
}

// proofKey is the proof key part of a replay cache key: what comes before the first ':'.
func proofKey(key string) string {
	if i := strings.IndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// Use records key until the given time and reports whether it was not in use.
func (m *MemoryDPoPReplayCache) Use(_ context.Context, key string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if exp, ok := m.seen[key]; ok {
		if now.Before(exp) {
			return false, nil
		}
		m.forgetLocked(key)
	}
	m.expireLocked(now)
	if !now.Before(until) {
		return true, nil // nothing to remember: the proof is too old to be used again anyway
	}
	owner := proofKey(key)
	if m.live[owner] >= m.perKey {
		m.sweepThrottledLocked(now)
		if m.live[owner] >= m.perKey {
			return false, errs.ResourceExhausted(ReasonDPoPKeyOverQuota, "too many DPoP proofs of this key in use, retry later")
		}
	}
	if len(m.seen) >= m.max {
		m.sweepThrottledLocked(now)
		if len(m.seen) >= m.max {
			return false, errs.Unavailable(ReasonDPoPReplayCacheFull, "cannot accept the DPoP proof right now, retry later",
				errors.New("DPoP replay cache is full of live proofs"))
		}
	}
	m.seen[key] = until
	m.live[owner]++
	m.order = append(m.order, replayEntry{key: key, until: until})
	return true, nil
}

// forgetLocked removes key from seen and from its proof key's count.
func (m *MemoryDPoPReplayCache) forgetLocked(key string) {
	if _, ok := m.seen[key]; !ok {
		return
	}
	delete(m.seen, key)
	owner := proofKey(key)
	if m.live[owner] <= 1 {
		delete(m.live, owner)
	} else {
		m.live[owner]--
	}
}

// Len returns the number of proofs remembered.
func (m *MemoryDPoPReplayCache) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}

// expireLocked forgets the expired entries at the front of the insertion order.
func (m *MemoryDPoPReplayCache) expireLocked(now time.Time) {
	for m.head < len(m.order) && !now.Before(m.order[m.head].until) {
		e := m.order[m.head]
		if exp, ok := m.seen[e.key]; ok && exp.Equal(e.until) {
			m.forgetLocked(e.key)
		}
		m.order[m.head] = replayEntry{}
		m.head++
	}
	if m.head > 1024 && m.head*2 > len(m.order) {
		m.order = append(m.order[:0:0], m.order[m.head:]...)
		m.head = 0
	}
}

// sweepThrottledLocked sweeps at most once a second: a key over its quota, or a full cache, must not
// make every request cost a pass over the whole cache.
func (m *MemoryDPoPReplayCache) sweepThrottledLocked(now time.Time) {
	if !m.swept.IsZero() && now.Sub(m.swept) < time.Second && now.After(m.swept) {
		return
	}
	m.swept = now
	m.sweepLocked(now)
}

// sweepLocked forgets every expired entry, in whatever order they were added.
func (m *MemoryDPoPReplayCache) sweepLocked(now time.Time) {
	kept := m.order[:0:0]
	for _, e := range m.order[m.head:] {
		if now.Before(e.until) {
			kept = append(kept, e)
		} else if exp, ok := m.seen[e.key]; ok && exp.Equal(e.until) {
			m.forgetLocked(e.key)
		}
	}
	m.order, m.head = kept, 0
}
