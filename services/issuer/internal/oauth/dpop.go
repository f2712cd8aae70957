package oauth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/replay"
)

// DPoP error codes (RFC 9449 §5, §8).
const (
	ErrInvalidDPoPProof = "invalid_dpop_proof"
	ErrUseDPoPNonce     = "use_dpop_nonce"
)

// DefaultDPoPNonceWindow is how long a server nonce is issued for; a nonce is accepted during its
// window and the next one.
const DefaultDPoPNonceWindow = 5 * time.Minute

// DPoPNonceKeySize is the size of the key server nonces are authenticated with.
const DPoPNonceKeySize = 32

// dpopReplayPrefix separates proof ids from client-assertion ids in the replay cache.
const dpopReplayPrefix = "dpop:"

// nonceMACSize is how much of the HMAC a nonce carries.
const nonceMACSize = 16

// DPoPConfig configures DPoP (RFC 9449) at the token endpoint.
type DPoPConfig struct {
	// NonceKey authenticates server nonces; every replica must share it so that any replica accepts
	// a nonce another issued (the issuer derives it from its KEK). Default: a random key, which
	// suits a single replica only.
	NonceKey []byte
	// NonceOptional, when true, accepts proofs without a server nonce. By default a nonce is required
	// (RFC 9449 §8): a proof without a current nonce is answered use_dpop_nonce.
	NonceOptional bool
	// NonceWindow is how long a nonce is issued for; default DefaultDPoPNonceWindow.
	NonceWindow time.Duration
	// MaxAge is how old a proof's iat may be; default authn.DefaultDPoPMaxAge.
	MaxAge time.Duration
	// Leeway is how far in the future a proof's iat may be; default authn.DefaultDPoPLeeway.
	Leeway time.Duration
}

// dpop holds the token endpoint's DPoP settings.
type dpop struct {
	key           []byte
	nonceOptional bool
	window        time.Duration
	maxAge        time.Duration
	leeway        time.Duration
}

func newDPoP(cfg DPoPConfig) (*dpop, error) {
	d := &dpop{key: cfg.NonceKey, nonceOptional: cfg.NonceOptional, window: cfg.NonceWindow, maxAge: cfg.MaxAge, leeway: cfg.Leeway}
	switch {
	case len(d.key) == 0:
		d.key = make([]byte, DPoPNonceKeySize)
		if _, err := rand.Read(d.key); err != nil {
			return nil, fmt.Errorf("oauth: DPoP nonce key: %w", err)
		}
	case len(d.key) < DPoPNonceKeySize:
		return nil, fmt.Errorf("oauth: the DPoP nonce key must be at least %d bytes", DPoPNonceKeySize)
	}
	if d.window <= 0 {
		d.window = DefaultDPoPNonceWindow
	}
	if d.window < time.Second {
		return nil, errors.New("oauth: the DPoP nonce window must be at least 1s")
	}
	if d.maxAge <= 0 {
		d.maxAge = authn.DefaultDPoPMaxAge
	}
	if d.leeway <= 0 {
		d.leeway = authn.DefaultDPoPLeeway
	}
	return d, nil
}

func (d *dpop) windowOf(t time.Time) uint64 {
	return uint64(t.Unix()) / uint64(d.window/time.Second)
}

func (d *dpop) mac(tenant string, window uint64) []byte {
	m := hmac.New(sha256.New, d.key)
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	var w [8]byte
	binary.BigEndian.PutUint64(w[:], window)
	m.Write(w[:])
	return m.Sum(nil)[:nonceMACSize]
}

// nonce returns the server nonce of tenant for the window holding now: base64url(window || MAC).
func (d *dpop) nonce(tenant string, now time.Time) string {
	w := d.windowOf(now)
	b := make([]byte, 8, 8+nonceMACSize)
	binary.BigEndian.PutUint64(b, w)
	return base64.RawURLEncoding.EncodeToString(append(b, d.mac(tenant, w)...))
}

// validNonce reports whether n is a nonce of tenant for the current or the previous window.
func (d *dpop) validNonce(tenant, n string, now time.Time) bool {
	b, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(b) != 8+nonceMACSize {
		return false
	}
	w, cur := binary.BigEndian.Uint64(b[:8]), d.windowOf(now)
	if w != cur && w+1 != cur {
		return false
	}
	return hmac.Equal(b[8:], d.mac(tenant, w))
}

// dpopError is a refused DPoP proof: 400 with code, a fresh nonce in DPoP-Nonce when the server
// requires nonces.
func (s *Server) dpopError(tenant, code string, cause error, format string, args ...any) *Error {
	e := newError(code, http.StatusBadRequest, format, args...)
	e.Cause = cause
	if !s.dpop.nonceOptional {
		e.DPoPNonce = s.dpop.nonce(tenant, s.now())
	}
	return e
}

// checkDPoPProof verifies the DPoP proof of a token request, if any, before the client is
// authenticated (a use_dpop_nonce answer must not spend the client's assertion). It returns nil
// when the request carries no proof.
func (s *Server) checkDPoPProof(tenant string, r Request) (*authn.DPoPProof, *Error) {
	switch {
	case len(r.DPoP) == 0:
		return nil, nil
	case len(r.DPoP) > 1:
		return nil, s.dpopError(tenant, ErrInvalidDPoPProof, nil, "more than one DPoP proof")
	}
	now := s.now()
	check := authn.DPoPCheck{Method: r.Method, URL: s.TokenEndpoint(tenant), Now: now, MaxAge: s.dpop.maxAge, Leeway: s.dpop.leeway}
	if !s.dpop.nonceOptional {
		check.NonceOK = func(n string) bool { return s.dpop.validNonce(tenant, n, now) }
	}
	p, err := authn.VerifyDPoPProof(r.DPoP[0], check)
	if err == nil {
		return p, nil
	}
	var e *errs.Error
	if errors.As(err, &e) && e.Reason == authn.ReasonDPoPNonce {
		return nil, s.dpopError(tenant, ErrUseDPoPNonce, err, "a DPoP nonce is required: retry with the nonce in the DPoP-Nonce header")
	}
	msg := "invalid DPoP proof"
	if errors.As(err, &e) {
		msg = e.Message
	}
	return nil, s.dpopError(tenant, ErrInvalidDPoPProof, err, "%s", msg)
}

// bindDPoP decides the binding of an authenticated client's token: a DPoP-bound client must present
// a proof; a proof's jti is spent once across replicas (scoped to the proof key). It returns the
// cnf of the token, nil for a bearer token.
func (s *Server) bindDPoP(ctx context.Context, tenant string, client *credentials.Client, p *authn.DPoPProof) (*authn.Confirmation, *Error) {
	if p == nil {
		if client.Proto.GetDpopBound() {
			return nil, s.dpopError(tenant, ErrInvalidDPoPProof, nil, "this client must use DPoP: send a DPoP proof")
		}
		return nil, nil
	}
	switch err := s.useProofID(ctx, tenant, p); {
	case errors.Is(err, replay.ErrReplayed):
		return nil, s.dpopError(tenant, ErrInvalidDPoPProof, err, "DPoP proof replayed")
	case err != nil:
		return nil, unavailable(err)
	}
	return &authn.Confirmation{JKT: p.JKT}, nil
}

// useProofID spends the proof's jti once across replicas (scoped to the proof key), kept while the
// proof can still be accepted (its iat plus the maximum age) rather than for the cache's whole TTL.
func (s *Server) useProofID(ctx context.Context, tenant string, p *authn.DPoPProof) error {
	if r, ok := s.replay.(expiringReplayCache); ok {
		return r.UseUntil(ctx, tenant, dpopReplayPrefix+p.JKT, p.ID, p.IssuedAt.Add(s.dpop.maxAge))
	}
	return s.replay.Use(ctx, tenant, dpopReplayPrefix+p.JKT, p.ID)
}
