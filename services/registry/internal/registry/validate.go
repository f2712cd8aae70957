package registry

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
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
	maxJWKSKeys    = 5
	// MaxLifetime is how far ahead an agent's expire_time may lie.
	MaxLifetime = 365 * 24 * time.Hour
)

// scopeRE is the scope naming scheme `resource.action[.qualifier]`.
var scopeRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)?$`)

// broadGrants are scope segments that would make a scope an administrative or catch-all grant.
var broadGrants = map[string]bool{"admin": true, "superuser": true, "root": true, "*": true, "all": true}

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

// ParsePublicJWKS parses an agent's JWK Set (authn.ParsePublicJWKS with at most 5 keys). Errors are
// InvalidArgument on field.
func ParsePublicJWKS(field, raw string) (*jose.JSONWebKeySet, error) {
	keys, err := authn.ParsePublicJWKS(raw, maxJWKSKeys)
	if err != nil {
		return nil, errs.InvalidArgument(field, err.Error())
	}
	return &jose.JSONWebKeySet{Keys: keys}, nil
}
