package manifest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// FieldChange is one declared field whose desired value differs from the registry's.
type FieldChange struct {
	// Path is the field's update_mask path (snake_case, as UpdateAgent takes it).
	Path string `json:"path"`
	// From is the registry's value, rendered for people.
	From string `json:"from"`
	// To is the desired value, rendered for people.
	To string `json:"to"`
}

// Diff compares the declared fields of desired with current and returns those that differ, in
// update_mask order. Scopes and roles compare as sets; labels as maps; an unset credential type is
// private-key-jwt. Keys are not compared here (see KeysDiffer).
func Diff(desired, current *registryv1.Agent) []FieldChange {
	var out []FieldChange
	add := func(path, from, to string) {
		if from != to {
			out = append(out, FieldChange{Path: path, From: from, To: to})
		}
	}
	add("display_name", current.GetDisplayName(), desired.GetDisplayName())
	add("owner", current.GetOwner(), desired.GetOwner())
	add("sponsor", current.GetSponsor(), desired.GetSponsor())
	add("purpose", current.GetPurpose(), desired.GetPurpose())
	add("environment", word(current.GetEnvironment().String(), "ENVIRONMENT_"), word(desired.GetEnvironment().String(), "ENVIRONMENT_"))
	add("autonomy", word(current.GetAutonomy().String(), "AUTONOMY_"), word(desired.GetAutonomy().String(), "AUTONOMY_"))
	add("identity_model", word(current.GetIdentityModel().String(), "IDENTITY_MODEL_"), word(desired.GetIdentityModel().String(), "IDENTITY_MODEL_"))
	add("trust_boundary", word(current.GetTrustBoundary().String(), "TRUST_BOUNDARY_"), word(desired.GetTrustBoundary().String(), "TRUST_BOUNDARY_"))
	add("data_sensitivity", word(current.GetDataSensitivity().String(), "DATA_SENSITIVITY_"), word(desired.GetDataSensitivity().String(), "DATA_SENSITIVITY_"))
	add("scopes", set(current.GetScopes()), set(desired.GetScopes()))
	add("roles", set(current.GetRoles()), set(desired.GetRoles()))
	add("credential_type", credentialType(current.GetCredentialType()), credentialType(desired.GetCredentialType()))
	add("function", current.GetFunction(), desired.GetFunction())
	add("decommission_criteria", current.GetDecommissionCriteria(), desired.GetDecommissionCriteria())
	add("labels", labels(current.GetLabels()), labels(desired.GetLabels()))
	add("dependencies", dependencies(current.GetDependencies()), dependencies(desired.GetDependencies()))
	add("expire_time", expiry(current), expiry(desired))
	return out
}

// Paths returns the update_mask paths of changes.
func Paths(changes []FieldChange) []string {
	out := make([]string, len(changes))
	for i, c := range changes {
		out[i] = c.Path
	}
	return out
}

func word(full, prefix string) string {
	if strings.HasSuffix(full, "_UNSPECIFIED") {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(full, prefix))
}

func credentialType(t registryv1.CredentialType) string {
	if t == registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP {
		return "private-key-jwt-dpop"
	}
	return "private-key-jwt"
}

func set(v []string) string {
	s := slices.Clone(v)
	slices.Sort(s)
	return "[" + strings.Join(slices.Compact(s), ",") + "]"
}

func labels(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func dependencies(ds []*registryv1.Dependency) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%s:%s", d.GetKind(), d.GetUri())
		if d.GetDescription() != "" {
			parts[i] += " (" + d.GetDescription() + ")"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func expiry(a *registryv1.Agent) string {
	if a.GetExpireTime() == nil {
		return ""
	}
	return a.GetExpireTime().AsTime().UTC().Truncate(time.Second).Format(time.RFC3339)
}
