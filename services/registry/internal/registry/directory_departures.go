package registry

import (
	"fmt"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Bounds of the principals one directory sync may depart without SyncDirectory.AllowMassDeparture:
// more than MaxReplaceDeparturesPercent percent of the ACTIVE principals, or more than
// MaxReplaceDepartures of them, is a mass departure. A sync departing one principal never is (one
// leaver, the everyday case even in a directory of a few principals).
const (
	// MaxReplaceDeparturesPercent is the share of the ACTIVE principals a sync may depart.
	MaxReplaceDeparturesPercent = 10
	// MaxReplaceDepartures is how many principals a sync may depart.
	MaxReplaceDepartures = 50
	// ReasonMassDeparture is the reason of the refusal of a mass departure.
	ReasonMassDeparture = "MASS_DEPARTURE"
)

// checkMassDeparture refuses a sync (merge or replace) that departs more ACTIVE principals than the
// bounds allow, unless allowed: an empty or truncated directory file, or one that lists everyone as
// DEPARTED, would otherwise orphan every agent of the tenant. Every ACTIVE principal the sync makes
// DEPARTED counts, whether the request lists it as DEPARTED or (a replace) leaves it out.
func (st *directoryState) checkMassDeparture(tenant string, _ []*registryv1.Principal, res SyncResult, _, allowed bool) error {
	if allowed {
		return nil
	}
	departing := 0
	for _, id := range res.Departed {
		if cur, ok := st.dir[id]; ok && cur.status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
			departing++
		}
	}
	active := 0
	for _, p := range st.dir {
		if p.status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
			active++
		}
	}
	if departing <= 1 || (departing <= MaxReplaceDepartures && departing*100 <= active*MaxReplaceDeparturesPercent) {
		return nil
	}
	return errs.FailedPrecondition(ReasonMassDeparture, fmt.Sprintf(
		"allow_mass_departure: the sync would depart %d of the %d ACTIVE principals of tenant %s (more than %d%% or more than %d), orphaning their agents; check the directory file, or set allow_mass_departure (agentctl directory sync --allow-mass-departure) if they all left",
		departing, active, tenant, MaxReplaceDeparturesPercent, MaxReplaceDepartures)).
		WithMetadata("departed", fmt.Sprint(departing)).WithMetadata("active", fmt.Sprint(active))
}
