package registry

import (
	"fmt"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Bounds of the principals one replacing directory sync may depart without
// SyncDirectory.AllowMassDeparture: more than MaxReplaceDeparturesPercent percent of the ACTIVE
// principals, or more than MaxReplaceDepartures of them, is a mass departure.
const (
	// MaxReplaceDeparturesPercent is the share of the ACTIVE principals a replace may depart.
	MaxReplaceDeparturesPercent = 10
	// MaxReplaceDepartures is how many principals a replace may depart.
	MaxReplaceDepartures = 50
	// ReasonMassDeparture is the reason of the refusal of a mass departure.
	ReasonMassDeparture = "MASS_DEPARTURE"
)

// checkMassDeparture refuses a replace that departs, by not listing them, more ACTIVE principals
// than the bounds allow, unless allowed: an empty or truncated directory file would otherwise
// orphan every agent of the tenant. Principals the request itself lists as DEPARTED are meant and
// do not count.
func (st *directoryState) checkMassDeparture(tenant string, in []*registryv1.Principal, res SyncResult, replace, allowed bool) error {
	if !replace || allowed {
		return nil
	}
	listed := make(map[string]bool, len(in))
	for _, p := range in {
		listed[p.GetId()] = true
	}
	unlisted := 0
	for _, id := range res.Departed {
		if !listed[id] {
			unlisted++
		}
	}
	active := 0
	for _, p := range st.dir {
		if p.status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
			active++
		}
	}
	if unlisted <= MaxReplaceDepartures && unlisted*100 <= active*MaxReplaceDeparturesPercent {
		return nil
	}
	return errs.FailedPrecondition(ReasonMassDeparture, fmt.Sprintf(
		"allow_mass_departure: the replace would depart %d of the %d ACTIVE principals of tenant %s (more than %d%% or more than %d), orphaning their agents; check the directory file, or set allow_mass_departure (agentctl directory sync --allow-mass-departure) if they all left",
		unlisted, active, tenant, MaxReplaceDeparturesPercent, MaxReplaceDepartures)).
		WithMetadata("departed", fmt.Sprint(unlisted)).WithMetadata("active", fmt.Sprint(active))
}
