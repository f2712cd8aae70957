package registry

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
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
	// MaxLabels is how many labels an agent may carry.
	MaxLabels = 64
	// MaxLabelLength bounds a label key and a label value.
	MaxLabelLength = 63
	// MaxRoles is how many roles an agent may hold.
	MaxRoles = 50
	// MaxDependencies is how many dependencies an agent may declare.
	MaxDependencies   = 50
	maxRoleName       = 63
	maxDependencyURI  = 2048
	maxDependencyDesc = 500
	maxDecommission   = 1000
	maxUpdateReason   = 1000
	// MaxLifetime is how far ahead an agent's expire_time may lie.
	MaxLifetime = 365 * 24 * time.Hour
)

// Functions are the documented values of Agent.function.
var Functions = []string{"assistant", "retrieval", "automation", "data-pipeline", "code", "customer-support", "security", "finance", "other"}

// DependencyKinds are the documented values of Dependency.kind.
var DependencyKinds = []string{"queue", "webhook", "storage", "database", "api", "secret", "other"}

var (
	// scopeRE is the scope naming scheme `resource.action[.qualifier]`.
	scopeRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)?$`)
	// labelKeyRE and labelValueRE are the label syntax: lowercase letters, digits, '-', '_', '.', '/'.
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9._/-]{1,63}$`)
	labelValueRE = regexp.MustCompile(`^[a-z0-9._/-]{0,63}$`)
	// roleRE is a role name: a lowercase letter, then lowercase letters, digits, '_', '-', '.', ':'.
	roleRE = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,62}$`)
	// secretParams are URI query parameters that carry credentials.
	secretParams = []string{"token", "access_token", "key", "api_key", "apikey", "secret", "password", "passwd", "pwd", "sig", "signature", "auth", "credential", "credentials", "x-amz-signature", "x-goog-signature", "sv"}
)

// broadGrants are scope segments that would make a scope an administrative or catch-all grant.
var broadGrants = map[string]bool{"admin": true, "superuser": true, "root": true, "*": true, "all": true}

// invalid is the InvalidArgument error of field breaking rule; the status message names both
// (`agent.sponsor: is required`), so that a client printing only the message shows the field.
func invalid(field, rule string) *errs.Error {
	return errs.InvalidArgument(field, field+": "+rule)
}

// fieldCheck validates one caller-settable field of an agent, named by its update_mask path.
type fieldCheck struct {
	path  string
	check func(a *registryv1.Agent, now time.Time) error
}

// fieldChecks validate the caller-settable fields, in the order errors are reported.
var fieldChecks = []fieldCheck{
	{"display_name", func(a *registryv1.Agent, _ time.Time) error {
		return checkText("agent.display_name", a.GetDisplayName(), true, maxDisplayName)
	}},
	{"owner", func(a *registryv1.Agent, _ time.Time) error {
		return checkPrincipal("agent.owner", a.GetOwner(), maxOwner)
	}},
	{"sponsor", func(a *registryv1.Agent, _ time.Time) error {
		return checkPrincipal("agent.sponsor", a.GetSponsor(), maxSponsor)
	}},
	{"purpose", func(a *registryv1.Agent, _ time.Time) error {
		return checkText("agent.purpose", a.GetPurpose(), true, maxPurpose)
	}},
	{"environment", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.environment", int32(a.GetEnvironment()), registryv1.Environment_name, true)
	}},
	{"autonomy", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.autonomy", int32(a.GetAutonomy()), registryv1.Autonomy_name, true)
	}},
	{"identity_model", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.identity_model", int32(a.GetIdentityModel()), registryv1.IdentityModel_name, true)
	}},
	{"trust_boundary", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.trust_boundary", int32(a.GetTrustBoundary()), registryv1.TrustBoundary_name, true)
	}},
	{"data_sensitivity", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.data_sensitivity", int32(a.GetDataSensitivity()), registryv1.DataSensitivity_name, true)
	}},
	{"scopes", func(a *registryv1.Agent, _ time.Time) error { return ValidateScopes("agent.scopes", a.GetScopes()) }},
	{"roles", func(a *registryv1.Agent, _ time.Time) error { return ValidateRoles("agent.roles", a.GetRoles()) }},
	{"credential_type", func(a *registryv1.Agent, _ time.Time) error {
		return checkEnum("agent.credential_type", int32(a.GetCredentialType()), registryv1.CredentialType_name, false)
	}},
	{"function", func(a *registryv1.Agent, _ time.Time) error {
		return ValidateFunction("agent.function", a.GetFunction())
	}},
	{"decommission_criteria", func(a *registryv1.Agent, _ time.Time) error {
		return checkText("agent.decommission_criteria", a.GetDecommissionCriteria(), false, maxDecommission)
	}},
	{"labels", func(a *registryv1.Agent, _ time.Time) error { return ValidateLabels("agent.labels", a.GetLabels()) }},
	{"dependencies", func(a *registryv1.Agent, _ time.Time) error {
		return ValidateDependencies("agent.dependencies", a.GetDependencies())
	}},
	{"expire_time", func(a *registryv1.Agent, now time.Time) error { return checkExpireTime(a, now) }},
}

// ValidateAgent checks the caller-settable fields of an agent to register, at time now. It returns
// an InvalidArgument error naming the first offending field ("agent.owner", "agent.scopes", ...)
// in its message. Output-only fields are not looked at; the keys (public_jwks) are checked too.
func ValidateAgent(a *registryv1.Agent, now time.Time) error {
	if a == nil {
		return invalid("agent", "is required")
	}
	for _, fc := range fieldChecks {
		if err := fc.check(a, now); err != nil {
			return err
		}
	}
	if _, err := ParsePublicJWKS("agent.public_jwks", a.GetPublicJwks()); err != nil {
		return err
	}
	return nil
}

// validateFields checks the fields of a named by update_mask paths, at time now.
func validateFields(a *registryv1.Agent, paths []string, now time.Time) error {
	for _, fc := range fieldChecks {
		if slices.Contains(paths, fc.path) {
			if err := fc.check(a, now); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkExpireTime(a *registryv1.Agent, now time.Time) error {
	et := a.GetExpireTime()
	if et == nil {
		return nil
	}
	if err := et.CheckValid(); err != nil {
		return invalid("agent.expire_time", "is not a valid timestamp")
	}
	t := et.AsTime()
	if !t.After(now) {
		return invalid("agent.expire_time", "must be in the future")
	}
	if t.After(now.Add(MaxLifetime)) {
		return invalid("agent.expire_time", "must be at most one year ahead")
	}
	return nil
}

// checkEnum checks an enum value: known, and set when required.
func checkEnum(field string, v int32, names map[int32]string, required bool) error {
	switch {
	case v == 0 && required:
		return invalid(field, "is required")
	case names[v] == "":
		return invalid(field, fmt.Sprintf("%d is not a known value", v))
	}
	return nil
}

// checkPrincipal validates an owner or sponsor: required text without spaces (a team such as
// `team:payments` or a person such as `alice@corp.example`).
func checkPrincipal(field, v string, max int) error {
	if err := checkText(field, v, true, max); err != nil {
		return err
	}
	if strings.IndexFunc(v, unicode.IsSpace) >= 0 {
		return invalid(field, "must not contain spaces (a team such as team:payments or a person such as alice@corp.example)")
	}
	return nil
}

// checkText validates a free-text field: valid UTF-8 without control characters, not blank when
// required, at most max characters.
func checkText(field, v string, required bool, max int) error {
	if strings.TrimSpace(v) == "" {
		if required {
			return invalid(field, "is required")
		}
		if v == "" {
			return nil
		}
		return invalid(field, "must not be blank")
	}
	if !utf8.ValidString(v) {
		return invalid(field, "must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(v); n > max {
		return invalid(field, fmt.Sprintf("must be at most %d characters", max))
	}
	if strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return invalid(field, "must not contain control characters")
	}
	return nil
}

// ValidateScopes checks a non-empty list of distinct scopes named `resource.action[.qualifier]`
// (lowercase) and refuses administrative or catch-all grants (a segment equal to admin, superuser,
// root, * or all).
func ValidateScopes(field string, scopes []string) error {
	if len(scopes) == 0 {
		return invalid(field, "at least one scope is required")
	}
	if len(scopes) > maxScopes {
		return invalid(field, fmt.Sprintf("at most %d scopes are allowed, got %d", maxScopes, len(scopes)))
	}
	seen := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		for _, seg := range strings.Split(s, ".") {
			if broadGrants[seg] {
				return invalid(field, fmt.Sprintf("scope %s is an administrative or catch-all grant (%q); agents get narrow scopes only", clip(s), seg))
			}
		}
		if !scopeRE.MatchString(s) {
			return invalid(field, fmt.Sprintf("scope %s must be named resource.action[.qualifier] in lowercase letters, digits, '_' and '-'", clip(s)))
		}
		if seen[s] {
			return invalid(field, fmt.Sprintf("scope %s is listed twice", clip(s)))
		}
		seen[s] = true
	}
	return nil
}

// ValidateRoles checks an optional list of distinct role names (a lowercase letter, then up to 62
// lowercase letters, digits, '_', '-', '.', ':'); administrative or catch-all role names (admin,
// superuser, root, all) are refused as for scopes.
func ValidateRoles(field string, roles []string) error {
	if len(roles) > MaxRoles {
		return invalid(field, fmt.Sprintf("at most %d roles are allowed, got %d", MaxRoles, len(roles)))
	}
	seen := make(map[string]bool, len(roles))
	for _, r := range roles {
		if !roleRE.MatchString(r) {
			return invalid(field, fmt.Sprintf("role %s must be a lowercase letter followed by at most %d lowercase letters, digits, '_', '-', '.' or ':'", clip(r), maxRoleName-1))
		}
		if broadGrants[r] {
			return invalid(field, fmt.Sprintf("role %q is an administrative or catch-all grant; agents get narrow roles only", r))
		}
		if seen[r] {
			return invalid(field, fmt.Sprintf("role %q is listed twice", r))
		}
		seen[r] = true
	}
	return nil
}

// ValidateFunction checks an agent's function: empty (classified as `other`) or one of Functions.
func ValidateFunction(field, f string) error {
	if f == "" || slices.Contains(Functions, f) {
		return nil
	}
	return invalid(field, fmt.Sprintf("%s is not a known function (one of %s)", clip(f), strings.Join(Functions, ", ")))
}

// ValidateLabels checks an agent's labels: at most MaxLabels, keys of 1 to 63 and values of 0 to 63
// lowercase letters, digits, '-', '_', '.' and '/'.
func ValidateLabels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid(field, fmt.Sprintf("at most %d labels are allowed, got %d", MaxLabels, len(labels)))
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first offending key in a stable order
	for _, k := range keys {
		if !labelKeyRE.MatchString(k) {
			return invalid(field, fmt.Sprintf("key %s must be 1 to %d lowercase letters, digits, '-', '_', '.' or '/'", clip(k), MaxLabelLength))
		}
		if v := labels[k]; !labelValueRE.MatchString(v) {
			return invalid(field, fmt.Sprintf("value %s of key %q must be at most %d lowercase letters, digits, '-', '_', '.' or '/'", clip(v), k, MaxLabelLength))
		}
	}
	return nil
}

// ValidateDependencies checks an agent's declared dependencies: at most MaxDependencies, each with
// a known kind and a URI (a URL or a provider resource name) that carries no credentials (no
// user:password@, no token, key, signature or password query parameter).
func ValidateDependencies(field string, deps []*registryv1.Dependency) error {
	if len(deps) > MaxDependencies {
		return invalid(field, fmt.Sprintf("at most %d dependencies are allowed, got %d", MaxDependencies, len(deps)))
	}
	seen := make(map[string]bool, len(deps))
	for i, d := range deps {
		f := fmt.Sprintf("%s[%d]", field, i)
		if d == nil {
			return invalid(f, "is required")
		}
		if !slices.Contains(DependencyKinds, d.GetKind()) {
			return invalid(f+".kind", fmt.Sprintf("%s is not a known kind (one of %s)", clip(d.GetKind()), strings.Join(DependencyKinds, ", ")))
		}
		if err := checkDependencyURI(f+".uri", d.GetUri()); err != nil {
			return err
		}
		if err := checkText(f+".description", d.GetDescription(), false, maxDependencyDesc); err != nil {
			return err
		}
		key := d.GetKind() + " " + d.GetUri()
		if seen[key] {
			return invalid(f, fmt.Sprintf("%s %s is listed twice", d.GetKind(), clip(d.GetUri())))
		}
		seen[key] = true
	}
	return nil
}

// checkDependencyURI validates a dependency's URI: required, printable, no spaces, and no
// credentials in it. The URI itself is not echoed in errors (it may hold a secret).
func checkDependencyURI(field, uri string) error {
	if uri == "" {
		return invalid(field, "is required")
	}
	if len(uri) > maxDependencyURI {
		return invalid(field, fmt.Sprintf("must be at most %d bytes", maxDependencyURI))
	}
	if !utf8.ValidString(uri) || strings.IndexFunc(uri, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
		return invalid(field, "must be a URL or resource name without spaces or control characters")
	}
	u, err := url.Parse(uri)
	if err != nil {
		return invalid(field, "is not a valid URI")
	}
	if u.User != nil {
		return invalid(field, "must not carry credentials (user or password before '@'); declare where the resource is, never a secret")
	}
	for p := range u.Query() {
		if slices.Contains(secretParams, strings.ToLower(p)) {
			return invalid(field, fmt.Sprintf("must not carry credentials (query parameter %q); declare where the resource is, never a secret", p))
		}
	}
	return nil
}

// ParsePublicJWKS parses an agent's JWK Set (authn.ParsePublicJWKS with at most 5 keys). Errors are
// InvalidArgument on field.
func ParsePublicJWKS(field, raw string) (*jose.JSONWebKeySet, error) {
	keys, err := authn.ParsePublicJWKS(raw, maxJWKSKeys)
	if err != nil {
		return nil, invalid(field, err.Error())
	}
	return &jose.JSONWebKeySet{Keys: keys}, nil
}

// clip quotes s for an error message (Go syntax, so invalid UTF-8 and control characters are
// escaped), cut to 64 characters.
func clip(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		s = string([]rune(s)[:64]) + "..."
	}
	return strconv.Quote(s)
}
