package registry

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Limits on registration input.
const (
	maxDisplayName = 200
	maxOwner       = 200
	maxSponsor     = 200
	maxPurpose     = 1000
	maxScopes      = 100
	maxJWKSBytes   = 16 << 10
	maxJWKSKeys    = 5
	maxKeyID       = 128
	// MaxLifetime is how far ahead an agent's expire_time may lie.
	MaxLifetime = 365 * 24 * time.Hour
)

// scopeRE is the scope naming scheme `resource.action[.qualifier]`.
var scopeRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)?$`)

// broadGrants are scope segments that would make a scope an administrative or catch-all grant.
var broadGrants = map[string]bool{"admin": true, "superuser": true, "root": true, "*": true, "all": true}

// privateJWKParams are JWK members that carry private or symmetric key material.
var privateJWKParams = []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth", "priv"}

// ValidateAgent checks the caller-settable fields of an agent to register, at time now. It returns
// an InvalidArgument error naming the first offending field ("agent.owner", "agent.scopes", ...).
// Output-only fields are not looked at.
func ValidateAgent(a *registryv1.Agent, now time.Time) error {
	if a == nil {
		return errs.InvalidArgument("agent", "is required")
	}
	if err := checkText("agent.display_name", a.GetDisplayName(), true, maxDisplayName); err != nil {
		return err
	}
	if err := checkText("agent.owner", a.GetOwner(), true, maxOwner); err != nil {
		return err
	}
	if err := checkText("agent.sponsor", a.GetSponsor(), false, maxSponsor); err != nil {
		return err
	}
	if err := checkText("agent.purpose", a.GetPurpose(), true, maxPurpose); err != nil {
		return err
	}
	for _, e := range []struct {
		field   string
		unset   bool
		unknown bool
	}{
		{"agent.environment", a.GetEnvironment() == registryv1.Environment_ENVIRONMENT_UNSPECIFIED, registryv1.Environment_name[int32(a.GetEnvironment())] == ""},
		{"agent.autonomy", a.GetAutonomy() == registryv1.Autonomy_AUTONOMY_UNSPECIFIED, registryv1.Autonomy_name[int32(a.GetAutonomy())] == ""},
		{"agent.identity_model", a.GetIdentityModel() == registryv1.IdentityModel_IDENTITY_MODEL_UNSPECIFIED, registryv1.IdentityModel_name[int32(a.GetIdentityModel())] == ""},
		{"agent.trust_boundary", a.GetTrustBoundary() == registryv1.TrustBoundary_TRUST_BOUNDARY_UNSPECIFIED, registryv1.TrustBoundary_name[int32(a.GetTrustBoundary())] == ""},
		{"agent.data_sensitivity", a.GetDataSensitivity() == registryv1.DataSensitivity_DATA_SENSITIVITY_UNSPECIFIED, registryv1.DataSensitivity_name[int32(a.GetDataSensitivity())] == ""},
	} {
		switch {
		case e.unset:
			return errs.InvalidArgument(e.field, "is required")
		case e.unknown:
			return errs.InvalidArgument(e.field, "is not a known value")
		}
	}
	if err := ValidateScopes("agent.scopes", a.GetScopes()); err != nil {
		return err
	}
	if _, err := ParsePublicJWKS("agent.public_jwks", a.GetPublicJwks()); err != nil {
		return err
	}
	if et := a.GetExpireTime(); et != nil {
		if err := et.CheckValid(); err != nil {
			return errs.InvalidArgument("agent.expire_time", "is not a valid timestamp")
		}
		t := et.AsTime()
		if !t.After(now) {
			return errs.InvalidArgument("agent.expire_time", "must be in the future")
		}
		if t.After(now.Add(MaxLifetime)) {
			return errs.InvalidArgument("agent.expire_time", "must be at most one year ahead")
		}
	}
	return nil
}

// checkText validates a free-text field: valid UTF-8 without control characters, not blank when
// required, at most max characters.
func checkText(field, v string, required bool, max int) error {
	if strings.TrimSpace(v) == "" {
		if required {
			return errs.InvalidArgument(field, "is required")
		}
		if v == "" {
			return nil
		}
		return errs.InvalidArgument(field, "must not be blank")
	}
	if !utf8.ValidString(v) {
		return errs.InvalidArgument(field, "must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > max {
		return errs.InvalidArgument(field, fmt.Sprintf("must be at most %d characters", max))
	}
	if strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return errs.InvalidArgument(field, "must not contain control characters")
	}
	return nil
}

// ValidateScopes checks a non-empty list of distinct scopes named `resource.action[.qualifier]`
// (lowercase) and refuses administrative or catch-all grants (a segment equal to admin, superuser,
// root, * or all).
func ValidateScopes(field string, scopes []string) error {
	if len(scopes) == 0 {
		return errs.InvalidArgument(field, "at least one scope is required")
	}
	if len(scopes) > maxScopes {
		return errs.InvalidArgument(field, fmt.Sprintf("at most %d scopes are allowed", maxScopes))
	}
	seen := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		for _, seg := range strings.Split(s, ".") {
			if broadGrants[seg] {
				return errs.InvalidArgument(field, fmt.Sprintf("scope %q is an administrative or catch-all grant (%q); agents get narrow scopes only", s, seg))
			}
		}
		if !scopeRE.MatchString(s) {
			return errs.InvalidArgument(field, fmt.Sprintf("scope %q must be named resource.action[.qualifier] in lowercase letters, digits, '_' and '-'", s))
		}
		if seen[s] {
			return errs.InvalidArgument(field, fmt.Sprintf("scope %q is listed twice", s))
		}
		seen[s] = true
	}
	return nil
}

// ParsePublicJWKS parses an agent's JWK Set: 1 to 5 public signing keys, each EC P-256 (ES256) or
// Ed25519 (EdDSA), each with a distinct kid. Private or symmetric key material is refused. Errors are
// InvalidArgument on field.
func ParsePublicJWKS(field, raw string) (*jose.JSONWebKeySet, error) {
	bad := func(format string, args ...any) (*jose.JSONWebKeySet, error) {
		return nil, errs.InvalidArgument(field, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(raw) == "" {
		return bad("is required: a JWK Set of the agent's public keys")
	}
	if len(raw) > maxJWKSBytes {
		return bad("must be at most %d bytes", maxJWKSBytes)
	}
	var doc struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return bad("is not a JWK Set (JSON object with \"keys\")")
	}
	if len(doc.Keys) == 0 || len(doc.Keys) > maxJWKSKeys {
		return bad("must hold 1 to %d keys", maxJWKSKeys)
	}
	set := &jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(doc.Keys))}
	kids := make(map[string]bool, len(doc.Keys))
	for i, members := range doc.Keys {
		for _, p := range privateJWKParams {
			if _, ok := members[p]; ok {
				return bad("key %d contains private key material (%q); register public keys only", i, p)
			}
		}
		b, err := json.Marshal(members)
		if err != nil {
			return bad("key %d is not a JWK", i)
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(b); err != nil {
			return bad("key %d is not a supported JWK (EC P-256 or Ed25519 public key)", i)
		}
		if !k.Valid() || !k.IsPublic() {
			return bad("key %d is not a valid public key", i)
		}
		switch pub := k.Key.(type) {
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				return bad("key %d: only EC keys on P-256 are accepted", i)
			}
			if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
				return bad("key %d: alg %q does not fit a P-256 key; use ES256", i, k.Algorithm)
			}
		case ed25519.PublicKey:
			if k.Algorithm != "" && k.Algorithm != string(jose.EdDSA) {
				return bad("key %d: alg %q does not fit an Ed25519 key; use EdDSA", i, k.Algorithm)
			}
		default:
			return bad("key %d: only EC P-256 (ES256) and Ed25519 (EdDSA) keys are accepted", i)
		}
		if k.Use != "" && k.Use != "sig" {
			return bad("key %d: use must be \"sig\"", i)
		}
		if k.KeyID == "" {
			return bad("key %d has no kid", i)
		}
		if len(k.KeyID) > maxKeyID || strings.IndexFunc(k.KeyID, unicode.IsControl) >= 0 {
			return bad("key %d: kid must be at most %d printable characters", i, maxKeyID)
		}
		if kids[k.KeyID] {
			return bad("key %d: kid %q is used twice", i, k.KeyID)
		}
		kids[k.KeyID] = true
		set.Keys = append(set.Keys, k)
	}
	return set, nil
}
