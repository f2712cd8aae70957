package keys

import (
	"errors"
	"fmt"
	"slices"
	"time"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// Signing-key states, as the API names them.
const (
	// StateNext is a key published in the JWKS that does not sign yet.
	StateNext = issuerv1.SigningKeyState_SIGNING_KEY_STATE_NEXT
	// StateCurrent is the key that signs a tenant's new tokens.
	StateCurrent = issuerv1.SigningKeyState_SIGNING_KEY_STATE_CURRENT
	// StateRetiring is a key that no longer signs and stays in the JWKS until its tokens have expired.
	StateRetiring = issuerv1.SigningKeyState_SIGNING_KEY_STATE_RETIRING
	// StateRetired is a key removed from the JWKS.
	StateRetired = issuerv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED
)

// ErrRing marks a lifecycle fact that does not fit a tenant's key ring (a second CURRENT or NEXT key,
// a transition of an unknown key or from the wrong state).
var ErrRing = errors.New("keys: signing key ring")

// Entry is one signing key of a tenant's ring: where it is in its rotation, its dates and its sealed
// private half. Signer is the unsealed key when the holder of the ring could open it.
type Entry struct {
	// KeyID is the key's kid.
	KeyID string
	// State is NEXT, CURRENT, RETIRING or RETIRED.
	State issuerv1.SigningKeyState
	// PublicJWK is the public half as JSON.
	PublicJWK string
	// CreateTime is when the key was created.
	CreateTime time.Time
	// ActivateTime is when the key became CURRENT; for a NEXT key the earliest time it may.
	ActivateTime time.Time
	// RetireTime is when the key stopped signing (its successor became CURRENT).
	RetireTime time.Time
	// RemoveTime is, for a RETIRING key, the earliest time it leaves the JWKS; for a RETIRED key, when it left.
	RemoveTime time.Time
	// KEKID is the id of the key-encryption key Sealed is sealed with.
	KEKID string
	// Sealed is the sealed private JWK.
	Sealed []byte
	// RequestID is the rotation request that created the key ("" for a tenant's first key).
	RequestID string
	// Signer is the unsealed key; nil when it was not (or could not be) opened.
	Signer *SigningKey
	// UnsealErr says why the current sealed form could not be opened; nil when it was, or was not tried.
	UnsealErr error
}

// Live reports whether the key is still in use: NEXT, CURRENT or RETIRING.
func (e *Entry) Live() bool { return e.State != StateRetired }

// Ring is a tenant's signing keys in creation order, folded from its lifecycle events. It is not safe
// for concurrent use.
type Ring struct {
	entries []*Entry
}

// Created adds a key. A key with state CURRENT (or unspecified: a tenant's first key, or one written
// before rotation existed) is accepted only while the ring has no CURRENT key; a NEXT key only while
// it has a CURRENT and no NEXT key. Adding a kid the ring holds changes nothing.
func (r *Ring) Created(e Entry) error {
	if r.Get(e.KeyID) != nil {
		return nil
	}
	switch e.State {
	case issuerv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED, StateCurrent:
		if c := r.Current(); c != nil {
			return fmt.Errorf("%w: key %s created CURRENT while %s is CURRENT", ErrRing, e.KeyID, c.KeyID)
		}
		e.State = StateCurrent
		if e.ActivateTime.IsZero() {
			e.ActivateTime = e.CreateTime
		}
	case StateNext:
		if r.Current() == nil {
			return fmt.Errorf("%w: key %s created NEXT without a CURRENT key", ErrRing, e.KeyID)
		}
		if n := r.Next(); n != nil {
			return fmt.Errorf("%w: key %s created NEXT while %s is NEXT", ErrRing, e.KeyID, n.KeyID)
		}
	default:
		return fmt.Errorf("%w: key %s created in state %s", ErrRing, e.KeyID, e.State)
	}
	r.entries = append(r.entries, &e)
	return nil
}

// Activated makes the NEXT key kid CURRENT at at and the CURRENT key prev RETIRING until removeAfter.
// Repeating a transition that happened changes nothing.
func (r *Ring) Activated(kid, prev string, at, removeAfter time.Time) error {
	next, old := r.Get(kid), r.Get(prev)
	switch {
	case next == nil || old == nil:
		return fmt.Errorf("%w: activation of %s after %s: unknown key", ErrRing, kid, prev)
	case next.State == StateCurrent && old.State != StateCurrent:
		return nil
	case next.State != StateNext || old.State != StateCurrent:
		return fmt.Errorf("%w: activation of %s (%s) after %s (%s)", ErrRing, kid, next.State, prev, old.State)
	}
	next.State, next.ActivateTime = StateCurrent, at
	old.State, old.RetireTime, old.RemoveTime = StateRetiring, at, removeAfter
	return nil
}

// Removed retires the RETIRING key kid at at: it leaves the JWKS and its private half is dropped.
func (r *Ring) Removed(kid string, at time.Time) error {
	e := r.Get(kid)
	switch {
	case e == nil:
		return fmt.Errorf("%w: removal of unknown key %s", ErrRing, kid)
	case e.State == StateRetired:
		return nil
	case e.State != StateRetiring:
		return fmt.Errorf("%w: removal of %s key %s", ErrRing, e.State, kid)
	}
	e.State, e.RemoveTime, e.Signer, e.Sealed = StateRetired, at, nil, nil
	return nil
}

// Resealed replaces the sealed form of the live key kid with sealed under kekID.
func (r *Ring) Resealed(kid, kekID string, sealed []byte) error {
	e := r.Get(kid)
	switch {
	case e == nil:
		return fmt.Errorf("%w: re-seal of unknown key %s", ErrRing, kid)
	case !e.Live():
		return nil
	}
	e.KEKID, e.Sealed = kekID, sealed
	return nil
}

// Get returns the key kid, or nil.
func (r *Ring) Get(kid string) *Entry {
	for _, e := range r.entries {
		if e.KeyID == kid {
			return e
		}
	}
	return nil
}

// Current returns the CURRENT key, or nil.
func (r *Ring) Current() *Entry { return r.inState(StateCurrent) }

// Next returns the NEXT key, or nil.
func (r *Ring) Next() *Entry { return r.inState(StateNext) }

func (r *Ring) inState(s issuerv1.SigningKeyState) *Entry {
	for _, e := range r.entries {
		if e.State == s {
			return e
		}
	}
	return nil
}

// Entries returns every key, newest first.
func (r *Ring) Entries() []*Entry {
	out := slices.Clone(r.entries)
	slices.Reverse(out)
	return out
}

// Live returns the keys in use (NEXT, CURRENT, RETIRING), newest first: the keys of the JWKS.
func (r *Ring) Live() []*Entry {
	out := make([]*Entry, 0, len(r.entries))
	for i := len(r.entries) - 1; i >= 0; i-- {
		if r.entries[i].Live() {
			out = append(out, r.entries[i])
		}
	}
	return out
}

// Transition is a lifecycle step that is due: an activation of a NEXT key or a removal of a RETIRING one.
type Transition struct {
	// Activate is the NEXT key to make CURRENT ("" for a removal).
	Activate string
	// Previous is the CURRENT key that becomes RETIRING with Activate.
	Previous string
	// Remove is the RETIRING key to remove ("" for an activation).
	Remove string
}

// Due returns the transitions due at now: the NEXT key's activation once its activate time has passed,
// and the removal of each RETIRING key whose remove time has passed.
func (r *Ring) Due(now time.Time) []Transition {
	var out []Transition
	if n, c := r.Next(), r.Current(); n != nil && c != nil && !now.Before(n.ActivateTime) {
		out = append(out, Transition{Activate: n.KeyID, Previous: c.KeyID})
	}
	for _, e := range r.entries {
		if e.State == StateRetiring && !now.Before(e.RemoveTime) {
			out = append(out, Transition{Remove: e.KeyID})
		}
	}
	return out
}

// RotationDue reports whether a scheduled rotation is due at now: the CURRENT key has signed for at
// least every (0: never) and no NEXT key exists.
func (r *Ring) RotationDue(now time.Time, every time.Duration) bool {
	c := r.Current()
	return every > 0 && c != nil && r.Next() == nil && !now.Before(c.ActivateTime.Add(every))
}
