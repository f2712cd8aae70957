package lifecycle

import (
	"crypto/sha256"
	"encoding/base64"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
)

// callerUpdateID is the Temporal update id of a decision (approval, sign-off, incident, review or
// rotation decision) that p submits with requestID. Temporal answers a repeated update id of a run with
// the first update's outcome, so the id is derived from the caller's identity (tenant and principal id)
// and the request id: a caller's repeat is answered like the first, while another caller who reuses
// (or guesses) the request id gets an update of its own and can never pre-empt, or be answered by,
// someone else's request. An empty requestID is a fresh random id. A caller without an identity is
// refused (fail closed).
func callerUpdateID(p *authn.Principal, requestID string) (string, error) {
	id, err := checkRequestID(requestID)
	if err != nil {
		return "", err
	}
	if p == nil || p.ID == "" {
		return "", errs.PermissionDenied("UNAUTHENTICATED_CALLER", "a decision needs an authenticated caller")
	}
	if requestID == "" {
		return id, nil // random already
	}
	sum := sha256.Sum256([]byte(p.Tenant + "\x00" + p.ID + "\x00" + requestID))
	return "req-" + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}
