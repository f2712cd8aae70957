package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/names"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// CreateRequestID is the request id agentctl registers the agent of a manifest name with. The
// registry derives the agent id from it, so the id follows from the name alone: every run finds the
// same agent, and a repeated registration creates nothing new.
func CreateRequestID(name string) string { return "agents-as-code/" + name }

// AgentID is the id of the agent a manifest named name registers in tenant.
func AgentID(tenant, name string) string { return names.DeriveAgentID(tenant, CreateRequestID(name)) }

// AgentName is the resource name of the agent a manifest named name registers in tenant.
func AgentName(tenant, name string) string {
	return "tenants/" + tenant + "/agents/" + AgentID(tenant, name)
}

// UpdateRequestID is the request id of an update: derived from the name, the content of the
// desired agent and the etag it was decided on, so a re-run of the same change is a repeat the
// registry recognises, while the same content after another change is a new request.
func UpdateRequestID(name string, desired *registryv1.Agent, etag string) string {
	return "agents-as-code/" + name + "/" + ContentHash(desired) + "/" + etag
}

// PruneRequestID is the request id of the retirement of a pruned agent.
func PruneRequestID(agentID string) string { return "agents-as-code/prune/" + agentID }

// ContentHash is a short hash of an agent's declared content (deterministic protobuf encoding).
func ContentHash(a *registryv1.Agent) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return "unhashable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// Enum values of the manifest's lowercase words.
var (
	environments = map[string]registryv1.Environment{
		"dev": registryv1.Environment_ENVIRONMENT_DEV, "test": registryv1.Environment_ENVIRONMENT_TEST,
		"staging": registryv1.Environment_ENVIRONMENT_STAGING, "prod": registryv1.Environment_ENVIRONMENT_PROD,
	}
	autonomies = map[string]registryv1.Autonomy{
		"assistive": registryv1.Autonomy_AUTONOMY_ASSISTIVE, "autonomous": registryv1.Autonomy_AUTONOMY_AUTONOMOUS,
	}
	identityModels = map[string]registryv1.IdentityModel{
		"autonomous": registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, "delegated": registryv1.IdentityModel_IDENTITY_MODEL_DELEGATED,
	}
	trustBoundaries = map[string]registryv1.TrustBoundary{
		"internal": registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL, "b2b": registryv1.TrustBoundary_TRUST_BOUNDARY_B2B,
		"public": registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC,
	}
	sensitivities = map[string]registryv1.DataSensitivity{
		"public": registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC, "internal": registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		"confidential": registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL, "pii": registryv1.DataSensitivity_DATA_SENSITIVITY_PII,
		"phi": registryv1.DataSensitivity_DATA_SENSITIVITY_PHI, "pci": registryv1.DataSensitivity_DATA_SENSITIVITY_PCI,
	}
	credentialTypes = map[string]registryv1.CredentialType{
		"": registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT, "private-key-jwt": registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT,
		"private-key-jwt-dpop": registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP,
	}
)

// ttlSlack is how far an existing agent's expiry may lie from create_time + TTL and still be the
// expiry its TTL gave it: the registration counted the TTL from the time agentctl sent it, a little
// before the registry's create_time.
const ttlSlack = 10 * time.Minute

// Agent converts a valid manifest into the registry Agent it declares, in tenant, as applied from
// the manifest set named set (its managed-by, source and name labels). current is the agent the
// registry holds (nil for a new one): a TTL expiry counts from its create_time, else from now.
func (m *Manifest) Agent(tenant, set string, current *registryv1.Agent, now time.Time) *registryv1.Agent {
	registered := now
	if current.GetCreateTime() != nil {
		registered = current.GetCreateTime().AsTime()
	}
	s := m.Spec
	labels := maps.Clone(m.Metadata.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedByAgentctl
	labels[LabelSource] = set
	labels[LabelName] = m.Metadata.Name
	a := &registryv1.Agent{
		Name:                 AgentName(tenant, m.Metadata.Name),
		AgentId:              AgentID(tenant, m.Metadata.Name),
		Tenant:               tenant,
		DisplayName:          s.DisplayName,
		Owner:                s.Owner,
		Sponsor:              s.Sponsor,
		Purpose:              s.Purpose,
		Environment:          environments[s.Environment],
		Autonomy:             autonomies[s.Autonomy],
		IdentityModel:        identityModels[s.IdentityModel],
		TrustBoundary:        trustBoundaries[s.TrustBoundary],
		DataSensitivity:      sensitivities[s.DataSensitivity],
		Function:             s.Function,
		Scopes:               slices.Clone(s.Scopes),
		Roles:                slices.Clone(s.Roles),
		CredentialType:       credentialTypes[s.CredentialType],
		PublicJwks:           m.JWKS,
		DecommissionCriteria: s.DecommissionCriteria,
		Labels:               labels,
	}
	for _, d := range s.Dependencies {
		a.Dependencies = append(a.Dependencies, &registryv1.Dependency{Kind: d.Kind, Uri: d.URI, Description: d.Description})
	}
	if s.Expires != "" {
		if ttl, ok, err := ParseTTL(s.Expires); ok && err == nil {
			a.ExpireTime = timestamppb.New(registered.Add(ttl).Truncate(time.Second))
			if cur := current.GetExpireTime(); cur != nil && cur.AsTime().Sub(a.ExpireTime.AsTime()).Abs() <= ttlSlack {
				a.ExpireTime = timestamppb.New(cur.AsTime())
			}
		} else if t, err := time.Parse(time.RFC3339, s.Expires); err == nil {
			a.ExpireTime = timestamppb.New(t)
		}
	}
	return a
}

// ValidSetName reports whether name can be the value of the source label.
func ValidSetName(name string) error {
	if name == "" || len(name) > 63 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_./") != "" {
		return fmt.Errorf("set name %q must be 1 to 63 lowercase letters, digits, '-', '_', '.' and '/'", name)
	}
	return nil
}

// Managed reports whether a registry agent is managed by agents as code, and from which set.
func Managed(a *registryv1.Agent) (set string, ok bool) {
	if a.GetLabels()[LabelManagedBy] != ManagedByAgentctl {
		return "", false
	}
	return a.GetLabels()[LabelSource], true
}

// keyThumbprints returns the RFC 7638 thumbprints of a JWK Set's keys (nil if it does not parse).
func keyThumbprints(jwks string) []string {
	keys, err := authn.ParsePublicJWKS(jwks, maxJWKSKeys)
	if err != nil {
		return nil
	}
	var out []string
	for _, k := range keys {
		if tp, err := authn.Thumbprint(k); err == nil {
			out = append(out, tp)
		}
	}
	slices.Sort(out)
	return out
}

// KeysDiffer reports whether the registry's keys differ from the manifest's: a key the manifest
// declares and the agent does not hold, or a key the agent holds and the manifest does not declare
// (someone else's key, or a rotation the manifest has not caught up with). Keys change only by
// rotation (AddAgentKey), so plan and apply refuse such an agent rather than adopt keys nobody
// declared.
func KeysDiffer(desired, current *registryv1.Agent) bool {
	return !slices.Equal(slices.Compact(keyThumbprints(desired.GetPublicJwks())), slices.Compact(keyThumbprints(current.GetPublicJwks())))
}
