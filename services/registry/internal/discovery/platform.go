package discovery

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/btree"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/discovery"
	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// PlatformIndex is what the platform findings read from the registry's read models besides its
// RPCs (registry.PlatformIndex implements it).
type PlatformIndex interface {
	// AgentPrincipals returns up to n distinct owners and sponsors of tenant's agents after after,
	// in order, and whether more follow.
	AgentPrincipals(tenant, after string, n int) ([]string, bool)
	// Unassigned returns up to n agents in states, not orphaned, without owner or sponsor, in
	// registration order after agent afterID, and the id to continue after ("" at the end).
	Unassigned(tenant string, states []registryv1.AgentState, afterID string, n int) ([]*registryv1.Agent, string, error)
	// PrincipalStatus reports whether tenant has a directory and the status of id in it.
	PrincipalStatus(tenant, id string) (bool, registryv1.PrincipalStatus)
}

// Rules of the platform findings.
const (
	RuleClientUnregistered = "platform.issuer-client-unregistered"
	RuleClientStale        = "platform.issuer-client-stale"
	RuleInactiveAgent      = "platform.inactive-agent"
	RuleOwnerlessAgent     = "platform.ownerless-agent"
	// RuleOwnerNotInDirectory and RuleSponsorNotInDirectory: an agent's owner or sponsor is not an
	// ACTIVE principal of the tenant's directory (unknown to it or DEPARTED) and the agent is not
	// (yet) marked orphaned.
	RuleOwnerNotInDirectory   = "platform.owner-not-in-directory"
	RuleSponsorNotInDirectory = "platform.sponsor-not-in-directory"
)

// The sections of a platform findings listing, in order.
const (
	secClients = iota
	secInactive
	secOrphaned
	secUnassigned
	secDirectory
	secDone
)

// maxPlatformScan caps what one ListPlatformFindings call examines beyond the findings it returns
// (issuer clients that are fine, directory principals that are ACTIVE): a page may hold fewer
// findings than page_size, and the listing goes on while next_page_token is set.
const maxPlatformScan = 5000

// principalChunk is how many directory principals are examined at a time.
const principalChunk = 500

// reviewStates are the states whose agents the agent findings are about (not terminal, not
// already being retired).
var reviewStates = []registryv1.AgentState{
	registryv1.AgentState_AGENT_STATE_PROPOSED, registryv1.AgentState_AGENT_STATE_PENDING,
	registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED,
}

// platformCursor is the position of a listing: the section and where in it, the inactivity
// parameters it started with (so the registry's page tokens, bound to their filters, stay valid).
type platformCursor struct {
	Days    int32  `json:"d"`
	Cutoff  int64  `json:"c"`           // inactive_since, unix seconds, fixed at the first page
	Section int    `json:"s"`           // secClients ... secDone
	Client  string `json:"k,omitempty"` // last client id examined
	Token   string `json:"t,omitempty"` // ListAgents page token within the section (or principal)
	After   string `json:"a,omitempty"` // last unassigned agent id returned
	Princ   string `json:"p,omitempty"` // directory: the last principal examined
	Listing bool   `json:"l,omitempty"` // directory: Princ is not ACTIVE and its agents are being listed
	Role    int    `json:"r,omitempty"` // directory: 0 its owned agents, 1 its sponsored ones
}

func (c platformCursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePlatformToken reads a page token of a listing with days (a fresh cursor when empty).
func decodePlatformToken(tok string, days int32, now time.Time) (platformCursor, error) {
	if tok == "" {
		return platformCursor{Days: days, Cutoff: now.Add(-time.Duration(days) * 24 * time.Hour).Unix()}, nil
	}
	bad := invalid("page_token", "is not a token of this listing (same inactive_days)")
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) > 4096 {
		return platformCursor{}, bad
	}
	var c platformCursor
	if err := json.Unmarshal(b, &c); err != nil || c.Days != days || c.Section < secClients || c.Section > secDone || c.Role < 0 || c.Role > 1 {
		return platformCursor{}, bad
	}
	return c, nil
}

// listPlatformFindings returns up to size findings from cur on, and the cursor after them (nil at
// the end). It reads a page at a time from the indexes and examines at most maxPlatformScan
// items that are no finding.
func (s *Server) listPlatformFindings(ctx context.Context, tenant string, cur platformCursor, size int) ([]*registryv1.Finding, *platformCursor, error) {
	var out []*registryv1.Finding
	var queue []string // directory principals read but not examined yet
	budget := maxPlatformScan
	for cur.Section < secDone && len(out) < size && budget > 0 {
		want := size - len(out)
		switch cur.Section {
		case secClients:
			clients, more := s.clients.ClientsAfter(tenant, cur.Client, min(want, budget))
			for _, c := range clients {
				f, err := s.clientFinding(ctx, tenant, c)
				if err != nil {
					return nil, nil, err
				}
				cur.Client = c.ClientID
				if f == nil {
					budget--
					continue
				}
				out = append(out, f)
			}
			if !more {
				cur = cur.next(secInactive)
			}
		case secInactive, secOrphaned:
			req := &registryv1.ListAgentsRequest{Parent: registry.TenantName(tenant), PageSize: int32(min(want, listAgentsPage)), PageToken: cur.Token, States: reviewStates}
			if cur.Section == secInactive {
				req.InactiveSince = &timestamppb.Timestamp{Seconds: cur.Cutoff}
				req.States = reviewStates[1:] // a PROPOSED agent has not been provisioned: it cannot be active
			} else {
				orphaned := true
				req.Orphaned = &orphaned
			}
			res, err := s.reg.ListAgents(ctx, req)
			if err != nil {
				return nil, nil, err
			}
			for _, a := range res.GetAgents() {
				if cur.Section == secInactive {
					out = append(out, s.inactiveFinding(a, cur.Days))
				} else {
					out = append(out, ownerlessFinding(a))
				}
			}
			if cur.Token = res.GetNextPageToken(); cur.Token == "" {
				cur = cur.next(cur.Section + 1)
			}
		case secUnassigned:
			agents, next, err := s.index.Unassigned(tenant, reviewStates, cur.After, want)
			if err != nil {
				return nil, nil, err
			}
			for _, a := range agents {
				out = append(out, ownerlessFinding(a))
				cur.After = a.GetAgentId()
			}
			if next == "" {
				cur = cur.next(secDirectory)
			}
		case secDirectory:
			if has, _ := s.index.PrincipalStatus(tenant, ""); !has {
				cur = cur.next(secDone)
				continue
			}
			if !cur.Listing {
				// The next principal that is not ACTIVE, from a chunk read once per call.
				if len(queue) == 0 {
					ids, more := s.index.AgentPrincipals(tenant, cur.Princ, principalChunk)
					if len(ids) == 0 && !more {
						cur = cur.next(secDone)
						continue
					}
					queue = ids
				}
				for len(queue) > 0 && !cur.Listing && budget > 0 {
					cur.Princ, queue = queue[0], queue[1:]
					if s.principalActive(tenant, cur.Princ) {
						budget--
						continue
					}
					cur.Listing, cur.Role, cur.Token = true, 0, ""
				}
				continue
			}
			notOrphaned := false
			req := &registryv1.ListAgentsRequest{Parent: registry.TenantName(tenant), PageSize: int32(min(want, listAgentsPage)), PageToken: cur.Token,
				States: reviewStates, Orphaned: &notOrphaned}
			rule, role := RuleOwnerNotInDirectory, "owner"
			if cur.Role == 0 {
				req.Owner = cur.Princ
			} else {
				req.Sponsor, rule, role = cur.Princ, RuleSponsorNotInDirectory, "sponsor"
			}
			res, err := s.reg.ListAgents(ctx, req)
			if err != nil {
				return nil, nil, err
			}
			_, st := s.index.PrincipalStatus(tenant, cur.Princ)
			for _, a := range res.GetAgents() {
				out = append(out, directoryFinding(a, rule, role, cur.Princ, st))
			}
			if cur.Token = res.GetNextPageToken(); cur.Token == "" {
				if cur.Role == 0 {
					cur.Role = 1
				} else {
					cur.Listing, cur.Role = false, 0 // done with this principal: the next one follows
					budget--
				}
			}
		}
	}
	if cur.Section == secDone {
		return out, nil, nil
	}
	return out, &cur, nil
}

// next is the cursor at the start of section sec.
func (c platformCursor) next(sec int) platformCursor {
	return platformCursor{Days: c.Days, Cutoff: c.Cutoff, Section: sec}
}

// principalActive reports whether id is an ACTIVE principal of tenant's directory.
func (s *Server) principalActive(tenant, id string) bool {
	_, st := s.index.PrincipalStatus(tenant, id)
	return st == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
}

// clientFinding is the finding about issuer client c, nil when there is none: an enabled client
// whose agent is not registered, or no longer live.
func (s *Server) clientFinding(ctx context.Context, tenant string, c IssuerClient) (*registryv1.Finding, error) {
	if c.Disabled {
		return nil, nil
	}
	agentID := c.ClientID
	if c.Agent != "" {
		if t, aid, err := registry.ParseAgentName("agent", c.Agent); err == nil && t == tenant {
			agentID = aid
		}
	}
	clientName := "tenants/" + tenant + "/clients/" + c.ClientID
	var a *registryv1.Agent
	name := registry.AgentName(tenant, agentID)
	if _, _, err := registry.ParseAgentName("agent", name); err == nil {
		res, err := s.reg.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		switch e := errs.FromStatus(err); {
		case err == nil:
			a = res.GetAgent()
		case e.Kind == errs.KindNotFound || e.Kind == errs.KindInvalidArgument:
		default:
			return nil, err
		}
	}
	switch {
	case a == nil:
		return platformFinding(RuleClientUnregistered, registryv1.FindingKind_FINDING_KIND_ISSUER_CLIENT,
			registryv1.FindingSeverity_FINDING_SEVERITY_HIGH, clientName, "",
			fmt.Sprintf("issuer client %s is enabled but no registered agent has its id", c.ClientID), c.ClientID, true), nil
	case !live(a.GetState()):
		return platformFinding(RuleClientStale, registryv1.FindingKind_FINDING_KIND_ISSUER_CLIENT,
			registryv1.FindingSeverity_FINDING_SEVERITY_HIGH, clientName, a.GetName(),
			fmt.Sprintf("issuer client %s is enabled but its agent is %s", c.ClientID, stateName(a.GetState())), c.ClientID, true), nil
	}
	return nil, nil
}

// inactiveFinding is the finding about agent a, not seen for days.
func (s *Server) inactiveFinding(a *registryv1.Agent, days int32) *registryv1.Finding {
	last, since := a.GetLastActiveTime(), "last active"
	if last == nil {
		last, since = a.GetCreateTime(), "never active; registered"
	}
	return platformFinding(RuleInactiveAgent, registryv1.FindingKind_FINDING_KIND_INACTIVE_AGENT,
		registryv1.FindingSeverity_FINDING_SEVERITY_MEDIUM, a.GetName(), a.GetName(),
		fmt.Sprintf("agent %s (%s) has had no activity for %d days (%s %s)", a.GetAgentId(), a.GetDisplayName(), days, since, last.AsTime().UTC().Format(time.DateOnly)),
		"", false)
}

// ownerlessFinding is the finding about agent a, orphaned or without an owner or sponsor.
func ownerlessFinding(a *registryv1.Agent) *registryv1.Finding {
	var why []string
	if a.GetOwner() == "" {
		why = append(why, "no owner")
	}
	if a.GetSponsor() == "" {
		why = append(why, "no sponsor")
	}
	if a.GetOrphaned() {
		reason := a.GetOrphanReason()
		if reason == "" {
			reason = "owner or sponsor departed"
		}
		why = append(why, "orphaned: "+reason)
	}
	sev := registryv1.FindingSeverity_FINDING_SEVERITY_MEDIUM
	if a.GetOrphaned() || a.GetOwner() == "" {
		sev = registryv1.FindingSeverity_FINDING_SEVERITY_HIGH
	}
	return platformFinding(RuleOwnerlessAgent, registryv1.FindingKind_FINDING_KIND_OWNERLESS_AGENT,
		sev, a.GetName(), a.GetName(), fmt.Sprintf("agent %s (%s): %s", a.GetAgentId(), a.GetDisplayName(), strings.Join(why, ", ")), "", false)
}

// directoryFinding is the finding about agent a whose owner or sponsor (role) principal has
// status st in the tenant's directory, not ACTIVE.
func directoryFinding(a *registryv1.Agent, rule, role, principal string, st registryv1.PrincipalStatus) *registryv1.Finding {
	what := "is not listed in the tenant's directory"
	if st != registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED {
		what = "is " + strings.TrimPrefix(st.String(), "PRINCIPAL_STATUS_") + " in the tenant's directory"
	}
	return platformFinding(rule, registryv1.FindingKind_FINDING_KIND_OWNERLESS_AGENT, registryv1.FindingSeverity_FINDING_SEVERITY_HIGH,
		a.GetName(), a.GetName(), fmt.Sprintf("agent %s (%s): %s %s %s, not ACTIVE; transfer the agent to an active principal", a.GetAgentId(), a.GetDisplayName(), role, principal, what),
		"", false)
}

// ClientsAfter returns up to n of tenant's clients with an id after after, ordered by id, and
// whether more follow.
func (p *ClientProjection) ClientsAfter(tenant, after string, n int) ([]IssuerClient, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ids := p.order[tenant]
	if ids == nil || n <= 0 {
		return nil, false
	}
	var out []IssuerClient
	more := false
	ids.Ascend(after, func(id string) bool {
		if id == after {
			return true
		}
		if len(out) == n {
			more = true
			return false
		}
		c := p.clients[tenant+"/"+id]
		cp := *c
		cp.Thumbprints = append([]string(nil), c.Thumbprints...)
		out = append(out, cp)
		return true
	})
	return out, more
}

// ordered returns tenant's ordered client ids, creating the set. Callers hold p.mu.
func (p *ClientProjection) ordered(tenant string) *btree.Set[string] {
	s := p.order[tenant]
	if s == nil {
		s = &btree.Set[string]{}
		p.order[tenant] = s
	}
	return s
}

// platformFindingByID finds the current platform finding with id about an issuer client: the
// finding (if the caller sent it) names its subject, else the tenant's clients are hashed a page
// at a time (no agent is read but the matching client's). A finding about a registered agent is
// not adoptable (FailedPrecondition); an unknown id is NotFound.
func (s *Server) platformFindingByID(ctx context.Context, tenant, id string, sent *registryv1.Finding) (*registryv1.Finding, error) {
	notFound := errs.NotFound("FINDING_NOT_FOUND", fmt.Sprintf("finding %s is not a current platform finding; for a code or log finding, send the finding as the scan returned it", id))
	clientPrefix := "tenants/" + tenant + "/clients/"
	if sent != nil {
		subject := sent.GetRedactedValue()
		if sent.GetId() != id || !discovery.CheckID(sent) || sent.GetFingerprint() != discovery.Fingerprint(subject) {
			return nil, invalid("finding.id", "does not match the finding's content (source, rule_id, fingerprint, subject)")
		}
		if clientID, ok := strings.CutPrefix(subject, clientPrefix); ok {
			c, ok := s.clients.Client(tenant, clientID)
			if !ok {
				return nil, notFound
			}
			f, err := s.clientFinding(ctx, tenant, c)
			if err != nil {
				return nil, err
			}
			if f == nil || f.GetId() != id {
				return nil, notFound
			}
			return f, nil
		}
		if _, _, err := registry.ParseAgentName("agent", subject); err == nil {
			return nil, errs.FailedPrecondition("FINDING_NOT_ADOPTABLE", "the finding is about registered agent "+subject+": update, transfer or retire it instead").
				WithMetadata("finding_id", id)
		}
		return nil, notFound
	}
	after := ""
	for {
		clients, more := s.clients.ClientsAfter(tenant, after, 1000)
		for _, c := range clients {
			after = c.ClientID
			fp := discovery.Fingerprint(clientPrefix + c.ClientID)
			src := registryv1.FindingSource_FINDING_SOURCE_PLATFORM
			if discovery.FindingID(src, RuleClientUnregistered, fp, "") != id && discovery.FindingID(src, RuleClientStale, fp, "") != id {
				continue
			}
			f, err := s.clientFinding(ctx, tenant, c)
			if err != nil {
				return nil, err
			}
			if f == nil || f.GetId() != id {
				return nil, notFound
			}
			return f, nil
		}
		if !more {
			return nil, notFound
		}
	}
}
