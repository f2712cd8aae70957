package discovery

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/discovery"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/names"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// Limits of the API.
const (
	maxIdentifierValue   = 256
	maxLogLines          = 10_000
	maxLogBytes          = 4 << 20
	defaultInactiveDays  = 90
	maxInactiveDays      = 3650
	defaultFindingsPage  = 100
	maxFindingsPage      = 1000
	listAgentsPage       = 1000
	adoptRequestIDPrefix = "adopt-"
)

// Registry is what discovery needs of the registry: its RPCs, called with the caller's context so
// that the caller's roles (and an owner's restriction to its own agents) apply as they do there.
type Registry interface {
	GetAgent(ctx context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error)
	ListAgents(ctx context.Context, req *registryv1.ListAgentsRequest) (*registryv1.ListAgentsResponse, error)
	RegisterAgent(ctx context.Context, req *registryv1.RegisterAgentRequest) (*registryv1.RegisterAgentResponse, error)
}

// KeyHolder returns the agent id that holds (or held) the key with thumbprint in tenant.
type KeyHolder func(tenant, thumbprint string) (agentID string, ok bool)

// Config configures a Server.
type Config struct {
	// Registry is the registry's RPCs. Required.
	Registry Registry
	// Keys finds the agent of a key thumbprint. Required.
	Keys KeyHolder
	// Clients is the issuer clients read model (run its runner). Required.
	Clients *ClientProjection
	// Index is the registry's read models the platform findings page through. Required.
	Index PlatformIndex
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Server implements agentid.registry.v1.DiscoveryService.
type Server struct {
	registryv1.UnimplementedDiscoveryServiceServer
	reg     Registry
	keys    KeyHolder
	clients *ClientProjection
	index   PlatformIndex
	now     func() time.Time
}

var _ registryv1.DiscoveryServiceServer = (*Server)(nil)

// New returns a discovery server.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil || cfg.Keys == nil || cfg.Clients == nil || cfg.Index == nil {
		return nil, errors.New("discovery: Config.Registry, Keys, Clients and Index are required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Server{reg: cfg.Registry, keys: cfg.Keys, clients: cfg.Clients, index: cfg.Index, now: now}, nil
}

// Role sets.
var (
	// readRoles may resolve identifiers: every role of the tenant.
	readRoles = []authn.Role{
		authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner, authn.RoleApprover,
		authn.RoleSecurityApprover, authn.RoleComplianceApprover, authn.RoleAuditor, authn.RoleAnalyst,
	}
	// reportRoles may read the tenant-wide discovery reports.
	reportRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleSecurityApprover, authn.RoleAuditor, authn.RoleAnalyst}
	// adoptRoles may adopt findings (as RegisterAgent, which checks an owner's restriction again).
	adoptRoles = []authn.Role{authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleOwner}
)

// invalid is InvalidArgument naming field and rule in the message itself (agentctl prints it).
func invalid(field, rule string) *errs.Error { return errs.InvalidArgument(field, field+": "+rule) }

// authorize checks the caller's role in tenant.
func authorize(ctx context.Context, tenant string, roles ...authn.Role) (*authn.Principal, error) {
	p, ok := authn.PrincipalFrom(ctx)
	if !ok {
		return nil, errs.Unauthenticated("UNAUTHENTICATED", "authentication required")
	}
	if err := p.Authorize(tenant, roles...); err != nil {
		return nil, err
	}
	return p, nil
}

// ResolveIdentifiers says which registered agent owns each identifier. Callers: any role of the
// tenant.
func (s *Server) ResolveIdentifiers(ctx context.Context, req *registryv1.ResolveIdentifiersRequest) (*registryv1.ResolveIdentifiersResponse, error) {
	tenant, err := registry.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if _, err := authorize(ctx, tenant, readRoles...); err != nil {
		return nil, err
	}
	ids := req.GetIdentifiers()
	if len(ids) > discovery.MaxIdentifiers {
		return nil, invalid("identifiers", fmt.Sprintf("must hold at most %d identifiers, not %d", discovery.MaxIdentifiers, len(ids)))
	}
	for i, id := range ids {
		if err := checkIdentifier(fmt.Sprintf("identifiers[%d]", i), id); err != nil {
			return nil, err
		}
	}
	res, err := s.resolve(ctx, tenant, ids)
	if err != nil {
		return nil, err
	}
	return &registryv1.ResolveIdentifiersResponse{Resolutions: res}, nil
}

// checkIdentifier validates one identifier.
func checkIdentifier(field string, id *registryv1.Identifier) error {
	v := id.GetValue()
	switch id.GetKind() {
	case registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID,
		registryv1.IdentifierKind_IDENTIFIER_KIND_KEY_THUMBPRINT:
	case registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT:
		if b, err := hex.DecodeString(v); err != nil || len(b) != 32 || strings.ToLower(v) != v {
			return invalid(field+".value", "must be a SHA-256 fingerprint in lowercase hex (64 digits), never the secret itself")
		}
	default:
		return invalid(field+".kind", "must be CLIENT_ID, AGENT_ID, KEY_THUMBPRINT or SECRET_FINGERPRINT")
	}
	if v == "" || len(v) > maxIdentifierValue {
		return invalid(field+".value", fmt.Sprintf("must be 1 to %d characters", maxIdentifierValue))
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return invalid(field+".value", "must be printable ASCII without spaces")
		}
	}
	return nil
}

// live reports whether an agent in state st owns its identifiers: a rejected, retired or expired
// agent does not (what still uses them is a ghost).
func live(st registryv1.AgentState) bool {
	switch st {
	case registryv1.AgentState_AGENT_STATE_REJECTED, registryv1.AgentState_AGENT_STATE_RETIRED, registryv1.AgentState_AGENT_STATE_EXPIRED:
		return false
	}
	return true
}

// resolve answers each identifier in order. Lookups that fail other than NotFound fail the call
// (closed: nothing is reported as owned or as a ghost on a guess).
func (s *Server) resolve(ctx context.Context, tenant string, ids []*registryv1.Identifier) ([]*registryv1.Resolution, error) {
	cache := map[string]*registryv1.Agent{}
	getAgent := func(id string) (*registryv1.Agent, error) {
		if a, ok := cache[id]; ok {
			return a, nil
		}
		if !names.ValidAgentID(id) {
			return nil, nil
		}
		res, err := s.reg.GetAgent(ctx, &registryv1.GetAgentRequest{Name: registry.AgentName(tenant, id)})
		if err != nil {
			if errs.KindOf(err) == errs.KindNotFound {
				cache[id] = nil
				return nil, nil
			}
			return nil, err
		}
		cache[id] = res.GetAgent()
		return res.GetAgent(), nil
	}
	out := make([]*registryv1.Resolution, 0, len(ids))
	for _, id := range ids {
		r := &registryv1.Resolution{Identifier: id}
		agentID := ""
		switch id.GetKind() {
		case registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID:
			agentID = id.GetValue()
			if c, ok := s.clients.Client(tenant, id.GetValue()); ok && c.Agent != "" {
				if t, aid, err := registry.ParseAgentName("agent", c.Agent); err == nil && t == tenant {
					agentID = aid
				}
			}
		case registryv1.IdentifierKind_IDENTIFIER_KIND_KEY_THUMBPRINT:
			if aid, ok := s.keys(tenant, id.GetValue()); ok {
				agentID = aid
			} else if cid, ok := s.clients.KeyClient(tenant, id.GetValue()); ok {
				agentID = cid
				if c, ok := s.clients.Client(tenant, cid); ok && c.Agent != "" {
					if t, aid, err := registry.ParseAgentName("agent", c.Agent); err == nil && t == tenant {
						agentID = aid
					}
				}
			}
		}
		if agentID != "" {
			a, err := getAgent(agentID)
			if err != nil {
				return nil, err
			}
			if a != nil {
				r.AgentState = a.GetState()
				if live(a.GetState()) {
					r.Agent = a.GetName()
				}
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// resolveFindings resolves findings' identifiers and marks the owned ones.
func (s *Server) resolveFindings(ctx context.Context, tenant string, fs []*registryv1.Finding) error {
	ids := discovery.Identifiers(fs)
	var all []*registryv1.Resolution
	for len(ids) > 0 {
		n := min(len(ids), discovery.MaxIdentifiers)
		res, err := s.resolve(ctx, tenant, ids[:n])
		if err != nil {
			return err
		}
		all = append(all, res...)
		ids = ids[n:]
	}
	discovery.ApplyResolutions(fs, all)
	return nil
}

// ScanLogs aggregates the identities of access log lines and resolves them. Callers:
// platform-admin, tenant-admin, security-approver, auditor, analyst.
func (s *Server) ScanLogs(ctx context.Context, req *registryv1.ScanLogsRequest) (*registryv1.ScanLogsResponse, error) {
	tenant, err := registry.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if _, err := authorize(ctx, tenant, reportRoles...); err != nil {
		return nil, err
	}
	if len(req.GetLines()) > maxLogLines {
		return nil, invalid("lines", fmt.Sprintf("must hold at most %d lines, not %d: send them in batches", maxLogLines, len(req.GetLines())))
	}
	total := 0
	for _, l := range req.GetLines() {
		total += len(l)
	}
	if total > maxLogBytes {
		return nil, invalid("lines", fmt.Sprintf("must hold at most %d bytes in all, not %d: send them in batches", maxLogBytes, total))
	}
	if len(req.GetSourceName()) > 256 {
		return nil, invalid("source_name", "must be at most 256 characters")
	}
	agg, err := discovery.NewLogAggregator(req.GetFormat(), cmp.Or(req.GetSourceName(), "access.log"))
	if err != nil {
		return nil, invalid("format", "must be LOG_FORMAT_NGINX or LOG_FORMAT_ENVOY")
	}
	for _, l := range req.GetLines() {
		agg.Add(l)
	}
	fs := agg.Findings()
	if err := s.resolveFindings(ctx, tenant, fs); err != nil {
		return nil, err
	}
	return &registryv1.ScanLogsResponse{Findings: fs, LinesParsed: agg.Parsed, LinesMalformed: agg.Malformed}, nil
}

// ListPlatformFindings lists issuer clients without a live registry entry, then inactive agents,
// orphaned agents, agents without owner or sponsor, and agents whose owner or sponsor is not an
// ACTIVE principal of the tenant's directory (each in registration order). Every section is read a
// page at a time from the registry's indexes (ListAgents filters inactive_since, orphaned, owner
// and sponsor); a call examines at most maxPlatformScan items that are no finding, so a page may
// be short while next_page_token is set. Callers: platform-admin, tenant-admin,
// security-approver, auditor, analyst.
func (s *Server) ListPlatformFindings(ctx context.Context, req *registryv1.ListPlatformFindingsRequest) (*registryv1.ListPlatformFindingsResponse, error) {
	tenant, err := registry.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if _, err := authorize(ctx, tenant, reportRoles...); err != nil {
		return nil, err
	}
	days := req.GetInactiveDays()
	switch {
	case days < 0 || days > maxInactiveDays:
		return nil, invalid("inactive_days", fmt.Sprintf("must be 0 (default %d) to %d", defaultInactiveDays, maxInactiveDays))
	case days == 0:
		days = defaultInactiveDays
	}
	size := req.GetPageSize()
	switch {
	case size < 0 || size > maxFindingsPage:
		return nil, invalid("page_size", fmt.Sprintf("must be 0 (default %d) to %d", defaultFindingsPage, maxFindingsPage))
	case size == 0:
		size = defaultFindingsPage
	}
	cur, err := decodePlatformToken(req.GetPageToken(), days, s.now())
	if err != nil {
		return nil, err
	}
	fs, next, err := s.listPlatformFindings(ctx, tenant, cur, int(size))
	if err != nil {
		return nil, err
	}
	if next != nil {
		// Look one finding ahead, so that the last page has no token: without one, the listing
		// ended; with none found within the scan cap, the next page starts after what was scanned.
		ahead, after, err := s.listPlatformFindings(ctx, tenant, *next, 1)
		switch {
		case err != nil:
			return nil, err
		case len(ahead) == 0:
			next = after
		}
	}
	res := &registryv1.ListPlatformFindingsResponse{Findings: fs}
	if next != nil {
		res.NextPageToken = next.encode()
	}
	return res, nil
}

// platformFinding builds a platform finding about subject (a client or agent resource name).
func platformFinding(rule string, kind registryv1.FindingKind, sev registryv1.FindingSeverity, subject, agent, msg, clientID string, ghost bool) *registryv1.Finding {
	fp := discovery.Fingerprint(subject)
	f := &registryv1.Finding{
		Source: registryv1.FindingSource_FINDING_SOURCE_PLATFORM, Kind: kind, RuleId: rule, Message: msg, Severity: sev,
		RedactedValue: subject, Fingerprint: fp, Agent: agent, Ghost: ghost, OwnedBy: agent,
	}
	if ghost {
		f.OwnedBy = ""
	}
	if clientID != "" {
		f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID, Value: clientID}
		f.Hints = map[string]string{"name": clientID}
	}
	f.Id = discovery.FindingID(f.Source, rule, fp, "")
	return f
}

func stateName(s registryv1.AgentState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "AGENT_STATE_"))
}

// AdoptFinding registers a ghost finding as a PROPOSED agent (RegisterAgent with proposed=true,
// request id `adopt-<finding id>`, so adopting again returns the same agent). Callers:
// platform-admin, tenant-admin, owner (for agents it owns).
func (s *Server) AdoptFinding(ctx context.Context, req *registryv1.AdoptFindingRequest) (*registryv1.AdoptFindingResponse, error) {
	tenant, err := registry.ParseTenantName("parent", req.GetParent())
	if err != nil {
		return nil, err
	}
	if _, err := authorize(ctx, tenant, adoptRoles...); err != nil {
		return nil, err
	}
	id := req.GetFindingId()
	if id == "" {
		return nil, invalid("finding_id", "is required")
	}
	if req.GetOwner() == "" {
		return nil, invalid("owner", "is required")
	}
	if req.GetSponsor() == "" {
		return nil, invalid("sponsor", "is required")
	}
	f := req.GetFinding()
	if f == nil || f.GetSource() == registryv1.FindingSource_FINDING_SOURCE_PLATFORM {
		if f, err = s.platformFindingByID(ctx, tenant, id, f); err != nil {
			return nil, err
		}
	} else {
		if f.GetId() != id {
			return nil, invalid("finding.id", fmt.Sprintf("must be finding_id %s", id))
		}
		if !discovery.CheckID(f) {
			return nil, invalid("finding.id", "does not match the finding's content (source, rule_id, fingerprint, file)")
		}
		f = proto.Clone(f).(*registryv1.Finding)
		f.OwnedBy, f.Ghost = "", true
		// Ownership is decided here, not taken from the request.
		if err := s.resolveFindings(ctx, tenant, []*registryv1.Finding{f}); err != nil {
			return nil, err
		}
	}
	if !f.GetGhost() {
		reason := "the finding is owned by " + cmp.Or(f.GetOwnedBy(), f.GetAgent()) + ": nothing to adopt"
		if f.GetKind() == registryv1.FindingKind_FINDING_KIND_INACTIVE_AGENT || f.GetKind() == registryv1.FindingKind_FINDING_KIND_OWNERLESS_AGENT {
			reason = "the finding is about registered agent " + f.GetAgent() + ": update, transfer or retire it instead"
		}
		return nil, errs.FailedPrecondition("FINDING_NOT_ADOPTABLE", reason).WithMetadata("finding_id", id)
	}
	agent := proposedAgent(f, req)
	// An owner may adopt: the request id adopt-<finding id> is reserved for adoption (registry.WithAdoption).
	res, err := s.reg.RegisterAgent(registry.WithAdoption(ctx), &registryv1.RegisterAgentRequest{
		Parent: registry.TenantName(tenant), Agent: agent, RequestId: adoptRequestIDPrefix + id, Proposed: true,
	})
	if err != nil {
		return nil, err
	}
	return &registryv1.AdoptFindingResponse{Agent: res.GetAgent(), Finding: f}, nil
}

// Labels an adopted agent carries.
const (
	// LabelFinding is the id of the finding the agent was adopted from.
	LabelFinding = "discovery.agentid.dev/finding"
	// LabelRule is the rule of that finding.
	LabelRule = "discovery.agentid.dev/rule"
)

// proposedAgent is the agent a finding is adopted as: the caller's template, with owner and
// sponsor from the request, and conservative defaults for what the template leaves unset (an
// unknown agent is assumed autonomous, production and confidential until someone says otherwise).
func proposedAgent(f *registryv1.Finding, req *registryv1.AdoptFindingRequest) *registryv1.Agent {
	a := &registryv1.Agent{}
	if t := req.GetAgent(); t != nil {
		a = proto.Clone(t).(*registryv1.Agent)
	}
	a.Owner, a.Sponsor = req.GetOwner(), req.GetSponsor()
	if a.DisplayName == "" {
		ident := ""
		if k := f.GetIdentifier().GetKind(); k == registryv1.IdentifierKind_IDENTIFIER_KIND_CLIENT_ID || k == registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID {
			ident = f.GetIdentifier().GetValue()
		}
		a.DisplayName = cmp.Or(f.GetHints()["name"], ident, "discovered "+strings.ToLower(strings.TrimPrefix(f.GetKind().String(), "FINDING_KIND_"))+" "+f.GetId())
	}
	if a.Purpose == "" {
		a.Purpose = "Adopted from discovery finding " + f.GetId() + " (" + f.GetRuleId() + "): " + f.GetMessage()
		if loc := f.GetFile(); loc != "" {
			a.Purpose += " in " + loc
		}
		if len(a.Purpose) > 1000 {
			a.Purpose = a.Purpose[:997] + "..."
		}
	}
	if a.Environment == registryv1.Environment_ENVIRONMENT_UNSPECIFIED {
		a.Environment = environmentHint(f.GetHints()["environment"])
	}
	if a.Autonomy == registryv1.Autonomy_AUTONOMY_UNSPECIFIED {
		a.Autonomy = registryv1.Autonomy_AUTONOMY_AUTONOMOUS
	}
	if a.IdentityModel == registryv1.IdentityModel_IDENTITY_MODEL_UNSPECIFIED {
		a.IdentityModel = registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS
	}
	if a.TrustBoundary == registryv1.TrustBoundary_TRUST_BOUNDARY_UNSPECIFIED {
		a.TrustBoundary = registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL
	}
	if a.DataSensitivity == registryv1.DataSensitivity_DATA_SENSITIVITY_UNSPECIFIED {
		a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	a.Labels[LabelFinding] = f.GetId()
	a.Labels[LabelRule] = f.GetRuleId()
	return a
}

// environmentHint maps a finding's environment hint; production when there is none.
func environmentHint(h string) registryv1.Environment {
	switch strings.ToLower(h) {
	case "dev", "development", "sandbox":
		return registryv1.Environment_ENVIRONMENT_DEV
	case "test", "testing", "qa":
		return registryv1.Environment_ENVIRONMENT_TEST
	case "staging", "stage", "preprod":
		return registryv1.Environment_ENVIRONMENT_STAGING
	default:
		return registryv1.Environment_ENVIRONMENT_PROD
	}
}
