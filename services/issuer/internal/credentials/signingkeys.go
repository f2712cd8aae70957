package credentials

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// Event types of a tenant's signing-key rotation (aggregate signingkey/{tenant}, stream CREDENTIALS).
const (
	// EventSigningKeyActivated: a NEXT key became CURRENT and the CURRENT one RETIRING.
	EventSigningKeyActivated = "signingkey.activated"
	// EventSigningKeyRemoved: a RETIRING key left the JWKS.
	EventSigningKeyRemoved = "signingkey.removed"
	// EventSigningKeyResealed: a key's private half was sealed under another key-encryption key.
	EventSigningKeyResealed = "signingkey.resealed"
)

// Defaults and bounds of SigningKeyRotation.
const (
	// DefaultPublishDelay is how long a NEXT key is published before it signs: twice the JWKS refresh
	// interval of pkg/authn's verifier (5 minutes), so every verifier has fetched it.
	DefaultPublishDelay = 2 * authn.DefaultJWKSRefreshInterval
	// MinPublishDelay is the shortest publish delay that is safe: pkg/authn's JWKS refresh interval,
	// so that a verifier with the default refresh has fetched a NEXT key before it signs.
	MinPublishDelay = authn.DefaultJWKSRefreshInterval
	// MaxActivationLag is the longest time an issuer replica may still sign with a key after its
	// activation was written, its projection lagging: the issuer's longest projection-lag allowance
	// (revocation.MaxProjectionLagAllowance).
	MaxActivationLag = time.Minute
	// DefaultRetention is how long a key stays in the JWKS after it stopped signing: the longest
	// access token lifetime, pkg/authn's clock leeway (30 s) and the longest activation lag, so it is
	// at least MinRetention whatever the projection-lag allowance.
	DefaultRetention = MaxTokenTTL + authn.DefaultLeeway + MaxActivationLag
)

// MinRetention is the shortest retention that is safe when replicas apply an activation within
// activationLag (the issuer's projection-lag allowance): a key stays in the JWKS until the last
// token it signed has expired, with pkg/authn's clock leeway.
func MinRetention(activationLag time.Duration) time.Duration {
	return MaxTokenTTL + authn.DefaultLeeway + activationLag
}

// SigningKeyRotation configures the rotation of tenant signing keys.
type SigningKeyRotation struct {
	// PublishDelay is how long a NEXT key is in the JWKS before it becomes CURRENT; at least the JWKS
	// cache lifetime of the verifiers. Default DefaultPublishDelay.
	PublishDelay time.Duration
	// Retention is how long a key stays in the JWKS after it stopped signing; at least the longest
	// lifetime of the tokens it signed plus clock leeway. Default DefaultRetention.
	Retention time.Duration
	// Interval rotates each tenant's key once it has been CURRENT this long; 0 never rotates on a
	// schedule (only on demand).
	Interval time.Duration
}

// withDefaults returns r with the defaults filled in, or an error naming a bad setting.
func (r SigningKeyRotation) withDefaults() (SigningKeyRotation, error) {
	if r.PublishDelay < 0 || r.Retention < 0 || r.Interval < 0 {
		return r, errors.New("credentials: signing-key PublishDelay, Retention and Interval must not be negative")
	}
	if r.PublishDelay == 0 {
		r.PublishDelay = DefaultPublishDelay
	}
	if r.Retention == 0 {
		r.Retention = DefaultRetention
	}
	if r.Interval != 0 && r.Interval <= r.PublishDelay {
		return r, fmt.Errorf("credentials: signing-key rotation Interval %s must exceed PublishDelay %s", r.Interval, r.PublishDelay)
	}
	return r, nil
}

// foldSigningKey applies one signing-key event of e's tenant to r. It returns the kid whose sealed
// form the event set ("" when none). Errors wrapping keys.ErrRing are facts that do not fit the ring.
func foldSigningKey(r *keys.Ring, e eventstore.Event) (string, error) {
	tenant := e.Metadata.Tenant
	if !authn.ValidTenant(tenant) || e.AggregateID != tenant {
		return "", fmt.Errorf("%w: signing key event %s: tenant %q, aggregate %q", keys.ErrRing, e.ID, tenant, e.AggregateID)
	}
	switch e.Type {
	case EventSigningKeyCreated:
		msg, err := eventstore.DecodeAs[*issuerv1.SigningKeyCreated](e)
		if err != nil {
			return "", err
		}
		kid := msg.GetKey().GetKeyId()
		if kid == "" || r.Get(kid) != nil {
			return "", nil
		}
		created := e.Time
		if ts := msg.GetKey().GetCreateTime(); ts != nil {
			created = ts.AsTime()
		}
		en := keys.Entry{
			KeyID: kid, State: msg.GetState(), PublicJWK: msg.GetKey().GetPublicJwk(), CreateTime: created.UTC(),
			KEKID: msg.GetKekId(), Sealed: msg.GetSealedPrivateJwk(), RequestID: msg.GetRequestId(),
		}
		if ts := msg.GetActivateAfter(); ts != nil {
			en.ActivateTime = ts.AsTime().UTC()
		}
		if err := r.Created(en); err != nil {
			return "", err
		}
		return kid, nil
	case EventSigningKeyActivated:
		msg, err := eventstore.DecodeAs[*issuerv1.SigningKeyActivated](e)
		if err != nil {
			return "", err
		}
		return "", r.Activated(msg.GetKeyId(), msg.GetPreviousKeyId(), timeOr(msg.GetActivateTime(), e.Time), timeOr(msg.GetRemovePreviousAfter(), e.Time))
	case EventSigningKeyRemoved:
		msg, err := eventstore.DecodeAs[*issuerv1.SigningKeyRemoved](e)
		if err != nil {
			return "", err
		}
		return "", r.Removed(msg.GetKeyId(), timeOr(msg.GetRemoveTime(), e.Time))
	case EventSigningKeyResealed:
		msg, err := eventstore.DecodeAs[*issuerv1.SigningKeyResealed](e)
		if err != nil {
			return "", err
		}
		if err := r.Resealed(msg.GetKeyId(), msg.GetKekId(), msg.GetSealedPrivateJwk()); err != nil {
			return "", err
		}
		if en := r.Get(msg.GetKeyId()); en != nil && en.Live() {
			return msg.GetKeyId(), nil
		}
		return "", nil
	default:
		return "", nil
	}
}

func timeOr(ts *timestamppb.Timestamp, def time.Time) time.Time {
	if ts == nil {
		return def.UTC()
	}
	return ts.AsTime().UTC()
}

// applySigningKeyEvent folds a signing-key event into the tenant's ring and unseals the key whose
// sealed form it set. A fact that does not fit the ring goes to the failed-event log. A key whose
// sealed form cannot be opened (unknown key-encryption key, tampering) keeps the key it had, if any,
// and records why: CheckSigningKeys reports it.
func (s *State) applySigningKeyEvent(e eventstore.Event) error {
	tenant := e.Metadata.Tenant
	s.mu.Lock()
	defer s.mu.Unlock()
	var ring keys.Ring
	if ts, ok := s.tenants[tenant]; ok {
		ring = ts.keys
	}
	kid, err := foldSigningKey(&ring, e)
	switch {
	case errors.Is(err, keys.ErrRing):
		return eventstore.Permanent(fmt.Errorf("signing key event %s refused: %w", e.ID, err))
	case err != nil:
		return err
	}
	ts := s.tenantLocked(tenant)
	ts.keys = ring
	if kid != "" {
		s.unsealLocked(tenant, ring.Get(kid))
	}
	return nil
}

// unsealLocked opens en's sealed form with the key-encryption key it names.
func (s *State) unsealLocked(tenant string, en *keys.Entry) {
	sealer, ok := s.sealers[en.KEKID]
	if !ok {
		en.UnsealErr = fmt.Errorf("signing key %s of tenant %s is sealed with key-encryption key %q, which this issuer was not given", en.KeyID, tenant, en.KEKID)
		return
	}
	priv, err := sealer.Open(en.Sealed, keys.SealAAD(tenant, en.KeyID))
	if err != nil {
		en.UnsealErr = fmt.Errorf("signing key %s of tenant %s (key-encryption key %q): %w", en.KeyID, tenant, en.KEKID, err)
		return
	}
	k, err := keys.FromPrivateJWK(priv, en.CreateTime)
	if err == nil && k.KeyID != en.KeyID {
		err = fmt.Errorf("kid %q does not match the sealed key %q", en.KeyID, k.KeyID)
	}
	if err != nil {
		en.UnsealErr = fmt.Errorf("signing key %s of tenant %s: %w", en.KeyID, tenant, err)
		return
	}
	en.Signer, en.UnsealErr = k, nil
}

// HasTenant reports whether the tenant has an authorization server (a CURRENT signing key).
func (s *State) HasTenant(tenant string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	return ok && ts.keys.Current() != nil
}

// CurrentKey returns the key that signs the tenant's new tokens: the CURRENT one. A NEXT key never
// signs, whatever its age: it signs once the activation event has been applied.
func (s *State) CurrentKey(tenant string) (*keys.SigningKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	if !ok {
		return nil, false
	}
	c := ts.keys.Current()
	if c == nil || c.Signer == nil {
		return nil, false
	}
	return c.Signer, true
}

// SigningKey returns the tenant's published key kid (NEXT, CURRENT or RETIRING).
func (s *State) SigningKey(tenant, kid string) (*keys.SigningKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	if !ok {
		return nil, false
	}
	en := ts.keys.Get(kid)
	if en == nil || !en.Live() || en.Signer == nil {
		return nil, false
	}
	return en.Signer, true
}

// SigningKeys returns the tenant's published keys (NEXT, CURRENT, RETIRING), newest first: its JWKS.
func (s *State) SigningKeys(tenant string) []*keys.SigningKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	if !ok {
		return nil
	}
	var out []*keys.SigningKey
	for _, en := range ts.keys.Live() {
		if en.Signer != nil {
			out = append(out, en.Signer)
		}
	}
	return out
}

// SigningKeyEntries returns every signing key of the tenant, removed ones included, newest first,
// without their private halves.
func (s *State) SigningKeyEntries(tenant string) []keys.Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ts, ok := s.tenants[tenant]
	if !ok {
		return nil
	}
	var out []keys.Entry
	for _, en := range ts.keys.Entries() {
		c := *en
		c.Signer, c.Sealed = nil, nil
		out = append(out, c)
	}
	return out
}

// SigningKeyTenants returns the tenants that have signing keys, sorted.
func (s *State) SigningKeyTenants() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.tenants))
	for t, ts := range s.tenants {
		if ts.keys.Current() != nil {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// signingKeysDue returns the tenants with a key transition due at now, or a scheduled rotation
// (every > 0), sorted.
func (s *State) signingKeysDue(now time.Time, every time.Duration) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for t, ts := range s.tenants {
		if len(ts.keys.Due(now)) > 0 || ts.keys.RotationDue(now, every) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// KEKUsage counts the signing keys in use (NEXT, CURRENT, RETIRING) of every tenant by the id of the
// key-encryption key they are sealed with.
func (s *State) KEKUsage() map[string]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]int)
	for _, ts := range s.tenants {
		for _, en := range ts.keys.Live() {
			out[en.KEKID]++
		}
	}
	return out
}

// CheckSigningKeys reports every signing key in use that this issuer cannot sign with: sealed with
// a key-encryption key it was not given, or that does not open. The issuer refuses to start on it
// (fail closed) rather than serve a tenant without its keys.
func (s *State) CheckSigningKeys() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tenants := make([]string, 0, len(s.tenants))
	for t := range s.tenants {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	var problems []error
	for _, t := range tenants {
		for _, en := range s.tenants[t].keys.Live() {
			switch {
			case en.UnsealErr != nil:
				problems = append(problems, en.UnsealErr)
			case en.Signer == nil:
				problems = append(problems, fmt.Errorf("signing key %s of tenant %s was never unsealed", en.KeyID, t))
			}
		}
	}
	return errors.Join(problems...)
}

// SigningKeyProto is the API form of a signing key.
func SigningKeyProto(en keys.Entry) *issuerv1.SigningKey {
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	return &issuerv1.SigningKey{
		KeyId: en.KeyID, Algorithm: "ES256", PublicJwk: en.PublicJWK, CreateTime: ts(en.CreateTime),
		State: en.State, ActivateTime: ts(en.ActivateTime), RetireTime: ts(en.RetireTime), RemoveTime: ts(en.RemoveTime),
		KekId: en.KEKID,
	}
}
