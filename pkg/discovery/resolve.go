package discovery

import (
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// MaxIdentifiers is the most identifiers one ResolveIdentifiers call takes.
const MaxIdentifiers = 1000

// identKey is an identifier as a map key.
type identKey struct {
	kind  registryv1.IdentifierKind
	value string
}

// Identifiers returns the distinct identifiers of findings, in first-seen order: what to ask
// ResolveIdentifiers (never a secret: client ids, agent ids, key thumbprints, fingerprints).
func Identifiers(findings []*registryv1.Finding) []*registryv1.Identifier {
	seen := map[identKey]bool{}
	var out []*registryv1.Identifier
	for _, f := range findings {
		id := f.GetIdentifier()
		if id == nil {
			continue
		}
		k := identKey{id.GetKind(), id.GetValue()}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, id)
	}
	return out
}

// ApplyResolutions marks the findings whose identifier a registered agent owns (owned_by set, ghost
// false, severity one level lower). An agent definition, OAuth client setting or credential with no
// identifier of its own is owned by the agent that owns another finding of the same file (the
// client id or agent id beside it), when exactly one agent does.
func ApplyResolutions(findings []*registryv1.Finding, resolutions []*registryv1.Resolution) {
	owner := map[identKey]string{}
	for _, r := range resolutions {
		if r.GetAgent() != "" {
			owner[identKey{r.GetIdentifier().GetKind(), r.GetIdentifier().GetValue()}] = r.GetAgent()
		}
	}
	fileOwners := map[string]map[string]bool{}
	for _, f := range findings {
		id := f.GetIdentifier()
		if id == nil {
			continue
		}
		if a := owner[identKey{id.GetKind(), id.GetValue()}]; a != "" {
			markOwned(f, a)
			if f.GetSource() == registryv1.FindingSource_FINDING_SOURCE_CODE && id.GetKind() != registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT {
				if fileOwners[f.GetFile()] == nil {
					fileOwners[f.GetFile()] = map[string]bool{}
				}
				fileOwners[f.GetFile()][a] = true
			}
		}
	}
	for _, f := range findings {
		if f.GetOwnedBy() != "" || f.GetSource() != registryv1.FindingSource_FINDING_SOURCE_CODE {
			continue
		}
		if id := f.GetIdentifier(); id != nil && id.GetKind() != registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT {
			continue // its own identifier is unowned: a different, unregistered client or agent
		}
		if owners := fileOwners[f.GetFile()]; len(owners) == 1 {
			for a := range owners {
				markOwned(f, a)
			}
		}
	}
}

func markOwned(f *registryv1.Finding, agent string) {
	f.OwnedBy = agent
	f.Ghost = false
	if f.GetSeverity() > registryv1.FindingSeverity_FINDING_SEVERITY_LOW {
		f.Severity--
	}
}
