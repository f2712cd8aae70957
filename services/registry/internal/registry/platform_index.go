package registry

import (
	"slices"
	"strconv"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// PlatformIndex is what the discovery service's platform findings read from the registry's read
// models besides its RPCs: the distinct owners and sponsors, the agents without one, and the
// tenant's directory. Every method answers from the indexes, a page at a time.
type PlatformIndex struct {
	// Agents is the agents read model.
	Agents *AgentProjection
	// Directories is the tenants' directories read model.
	Directories *DirectoryProjection
}

// AgentPrincipals returns up to n of the distinct owners and sponsors of tenant's agents whose id
// sorts after after, in order, and whether more follow. It reads the keys of the owner and sponsor
// posting lists; no agent is read.
func (x PlatformIndex) AgentPrincipals(tenant, after string, n int) ([]string, bool) {
	p := x.Agents
	p.mu.RLock()
	t := p.tenants[tenant]
	var ids []string
	if t != nil {
		for k := range t.post {
			var id string
			switch {
			case strings.HasPrefix(k, postOwner):
				id = k[len(postOwner):]
			case strings.HasPrefix(k, postSponsor):
				id = k[len(postSponsor):]
			default:
				continue
			}
			if id != "" && id > after {
				ids = append(ids, id)
			}
		}
	}
	p.mu.RUnlock()
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > n {
		return ids[:n], true
	}
	return ids, false
}

// Unassigned returns up to n agents of tenant in one of states, not orphaned, that have no owner
// or no sponsor (agents registered before both were required), in registration order after the
// agent afterID ("" from the first), and the id to continue after ("" when none follow). An
// afterID the read model does not hold is InvalidArgument on page_token.
func (x PlatformIndex) Unassigned(tenant string, states []registryv1.AgentState, afterID string, n int) ([]*registryv1.Agent, string, error) {
	p := x.Agents
	p.mu.RLock()
	defer p.mu.RUnlock()
	t := p.tenants[tenant]
	if t == nil || n <= 0 {
		return nil, "", nil
	}
	start := uint32(0)
	if afterID != "" {
		o, ok := t.ords[afterID]
		if !ok {
			return nil, "", invalid("page_token", "is not a token returned by this service")
		}
		start = o + 1
	}
	set := roaring.New()
	for _, k := range []string{postOwner, postSponsor} {
		if b := t.post[k]; b != nil {
			set.Or(b)
		}
	}
	if set.IsEmpty() {
		return nil, "", nil
	}
	inStates := roaring.New()
	for _, st := range states {
		if b := t.post[postState+strconv.Itoa(int(st))]; b != nil {
			inStates.Or(b)
		}
	}
	set.And(inStates)
	if b := t.post[postOrphaned]; b != nil {
		set.AndNot(b)
	}
	var out []*registryv1.Agent
	var last uint32
	it := set.Iterator()
	it.AdvanceIfNeeded(start)
	for it.HasNext() {
		o := it.Next()
		if len(out) == n {
			return out, t.entries[last].id, nil
		}
		if a := viewEntry(&t.entries[o]); a != nil {
			out = append(out, a)
		}
		last = o
	}
	return out, "", nil
}

// PrincipalStatus reports whether tenant has a directory and the status of id in it
// (UNSPECIFIED when the directory does not list it).
func (x PlatformIndex) PrincipalStatus(tenant, id string) (bool, registryv1.PrincipalStatus) {
	p := x.Directories
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := p.tenants[tenant]
	if d == nil {
		return false, registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED
	}
	e, ok := d[id]
	if !ok {
		return true, registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED
	}
	return true, e.status
}
