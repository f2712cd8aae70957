// Package workflowstest runs small in-process fakes of the registry, issuer and policy gRPC services for
// tests of the workflows and the lifecycle service: real gRPC servers on a loopback port that keep just
// enough state to answer like the real services, and record every request.
package workflowstest

import (
	"context"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Services are the fakes served on one loopback gRPC listener.
type Services struct {
	// Registry is the fake RegistryService.
	Registry *Registry
	// Issuer is the fake IssuerService.
	Issuer *Issuer
	// Policy is the fake PolicyService.
	Policy *Policy
	// Monitor is the fake MonitorService.
	Monitor *Monitor
	// Addr is the listener's host:port.
	Addr string

	mu       sync.Mutex
	requests map[string][]proto.Message // by method name, e.g. "ActivateAgent"
	auth     []string                   // authorization headers seen
	failures map[string][]error         // errors to return before serving a method normally
	after    map[string]func()          // hooks run after a method answered
	srv      *grpc.Server
}

// Start serves the fakes until the test ends.
func Start(t testing.TB) *Services {
	t.Helper()
	s := &Services{
		Registry: &Registry{agents: map[string]*registryv1.Agent{}},
		Issuer:   &Issuer{clients: map[string]*issuerv1.Client{}},
		Policy:   &Policy{decisions: map[string]*policyv1.Decision{}},
		Monitor:  &Monitor{},
		requests: map[string][]proto.Message{},
		failures: map[string][]error{},
		after:    map[string]func(){},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("workflowstest: listen: %v", err)
	}
	s.Addr = lis.Addr().String()
	s.srv = grpc.NewServer(grpc.UnaryInterceptor(s.intercept))
	registryv1.RegisterRegistryServiceServer(s.srv, s.Registry)
	issuerv1.RegisterIssuerServiceServer(s.srv, s.Issuer)
	policyv1.RegisterPolicyServiceServer(s.srv, s.Policy)
	monitorv1.RegisterMonitorServiceServer(s.srv, s.Monitor)
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(s.srv.Stop)
	return s
}

// Conn returns a plaintext client connection to the fakes, closed when the test ends.
func (s *Services) Conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("workflowstest: dial: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// FailNext makes the next len(errors) calls of method (e.g. "ActivateAgent") fail with those errors,
// in order, before the method answers normally again.
func (s *Services) FailNext(method string, errors ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = append(s.failures[method], errors...)
}

// After runs fn each time method has answered (e.g. to change the world between two calls).
func (s *Services) After(method string, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.after[method] = fn
}

// Requests returns the requests received for method (e.g. "ActivateAgent"), in order, including those
// that failed.
func (s *Services) Requests(method string) []proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]proto.Message(nil), s.requests[method]...)
}

// RequestsOf returns the requests received for method as their concrete type.
func RequestsOf[T proto.Message](s *Services, method string) []T {
	var out []T
	for _, m := range s.Requests(method) {
		if r, ok := m.(T); ok {
			out = append(out, r)
		}
	}
	return out
}

// AuthHeaders returns the authorization headers the fakes received, in order.
func (s *Services) AuthHeaders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

func (s *Services) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	s.mu.Lock()
	if m, ok := req.(proto.Message); ok {
		s.requests[method] = append(s.requests[method], proto.Clone(m))
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		s.auth = append(s.auth, md.Get("authorization")...)
	}
	var fail error
	if q := s.failures[method]; len(q) > 0 {
		fail, s.failures[method] = q[0], q[1:]
	}
	s.mu.Unlock()
	if fail != nil {
		return nil, errs.ToStatus(fail).Err()
	}
	resp, err := h(ctx, req)
	s.mu.Lock()
	after := s.after[method]
	s.mu.Unlock()
	if after != nil {
		after()
	}
	if err != nil {
		return nil, errs.ToStatus(err).Err()
	}
	return resp, nil
}

// NewAgent returns a PENDING agent of tenant with id, environment dev, two scopes and a public JWKS.
func NewAgent(tenant, id string, tier registryv1.RiskTier) *registryv1.Agent {
	return &registryv1.Agent{
		Name:            "tenants/" + tenant + "/agents/" + id,
		AgentId:         id,
		Tenant:          tenant,
		DisplayName:     "Agent " + id,
		Owner:           "team:payments",
		Sponsor:         "alice@corp.example",
		Purpose:         "answers questions",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier:        tier,
		Scopes:          []string{"faq.read", "ticket.create"},
		PublicJwks:      `{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}`,
		State:           registryv1.AgentState_AGENT_STATE_PENDING,
		CreateTime:      timestamppb.Now(),
	}
}

// Registry is a fake RegistryService holding agents in memory. Mutations follow the real state
// machine; a repeated request id answers like the first call.
type Registry struct {
	registryv1.UnimplementedRegistryServiceServer
	// Clock is the registry's clock (ExpireAgent compares it with expire_time); nil is time.Now.
	Clock       func() time.Time
	mu          sync.Mutex
	agents      map[string]*registryv1.Agent
	seen        map[string]bool
	suspensions map[string]suspension              // by agent name: what made its current suspension
	principals  map[string][]*registryv1.Principal // by tenant: its directory (SetPrincipals)
}

// suspension is the cause of an agent's suspension and the request id that made it.
type suspension struct{ cause, requestID string }

// SuspensionCause is the cause of the agent's current suspension: the one SuspendAgent recorded,
// operator for an agent stored SUSPENDED by Put, empty when it is not SUSPENDED.
func (r *Registry) SuspensionCause(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.suspensionLocked(name).cause
}

func (r *Registry) suspensionLocked(name string) suspension {
	a, ok := r.agents[name]
	if !ok || a.GetState() != registryv1.AgentState_AGENT_STATE_SUSPENDED {
		return suspension{}
	}
	if s, ok := r.suspensions[name]; ok {
		return s
	}
	return suspension{cause: "operator"}
}

// Put stores (or replaces) an agent.
func (r *Registry) Put(a *registryv1.Agent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agents[a.GetName()] = proto.Clone(a).(*registryv1.Agent)
}

// Agent returns a copy of the stored agent, or nil.
func (r *Registry) Agent(name string) *registryv1.Agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.agents[name]; ok {
		return proto.Clone(a).(*registryv1.Agent)
	}
	return nil
}

// GetAgent returns a stored agent.
func (r *Registry) GetAgent(_ context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error) {
	if a := r.Agent(req.GetName()); a != nil {
		return &registryv1.GetAgentResponse{Agent: a}, nil
	}
	return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found")
}

// transition moves an agent from one of the states in from to state to.
func (r *Registry) transition(name, requestID string, to registryv1.AgentState, mutate func(*registryv1.Agent), from ...registryv1.AgentState) (*registryv1.Agent, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[name]
	if !ok {
		return nil, errs.NotFound("AGENT_NOT_FOUND", "agent not found")
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if requestID != "" && r.seen[requestID] && a.GetState() == to {
		return proto.Clone(a).(*registryv1.Agent), nil
	}
	ok = false
	for _, f := range from {
		ok = ok || a.GetState() == f
	}
	if !ok {
		// The registry's reason names the state the agent is in, e.g. AGENT_STATE_ACTIVE.
		return nil, errs.FailedPrecondition(a.GetState().String(), fmt.Sprintf("agent is %s", a.GetState()))
	}
	a.State = to
	if mutate != nil {
		mutate(a)
	}
	r.seen[requestID] = true
	return proto.Clone(a).(*registryv1.Agent), nil
}

// ActivateAgent makes a PENDING agent ACTIVE.
func (r *Registry) ActivateAgent(_ context.Context, req *registryv1.ActivateAgentRequest) (*registryv1.ActivateAgentResponse, error) {
	var override func(a *registryv1.Agent)
	if t := req.GetOverrideRiskTier(); t != registryv1.RiskTier_RISK_TIER_UNSPECIFIED {
		// As the registry records a policy's risk tier override.
		override = func(a *registryv1.Agent) {
			c := proto.CloneOf(a.GetClassification())
			if c == nil {
				c = &registryv1.Classification{}
			}
			c.OverrideRiskTier, c.OverrideReason, c.OverrideSource = t, req.GetOverrideReason(), req.GetOverrideSource()
			a.Classification, a.RiskTier = c, t
		}
	}
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_ACTIVE, override, registryv1.AgentState_AGENT_STATE_PENDING)
	if err != nil {
		return nil, err
	}
	return &registryv1.ActivateAgentResponse{Agent: a}, nil
}

// RejectAgent makes a PENDING agent REJECTED.
func (r *Registry) RejectAgent(_ context.Context, req *registryv1.RejectAgentRequest) (*registryv1.RejectAgentResponse, error) {
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_REJECTED,
		func(a *registryv1.Agent) { a.StateReason = req.GetReason() }, registryv1.AgentState_AGENT_STATE_PENDING)
	if err != nil {
		return nil, err
	}
	return &registryv1.RejectAgentResponse{Agent: a}, nil
}

// RetireAgent makes a PENDING, ACTIVE, SUSPENDED or EXPIRED agent RETIRING.
func (r *Registry) RetireAgent(_ context.Context, req *registryv1.RetireAgentRequest) (*registryv1.RetireAgentResponse, error) {
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_RETIRING,
		func(a *registryv1.Agent) { a.StateReason = req.GetReason() },
		registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_ACTIVE, registryv1.AgentState_AGENT_STATE_SUSPENDED,
		registryv1.AgentState_AGENT_STATE_EXPIRED)
	if err != nil {
		return nil, err
	}
	return &registryv1.RetireAgentResponse{Agent: a}, nil
}

// ExpireAgent makes a PENDING, ACTIVE or SUSPENDED agent whose expire_time has passed (by Clock)
// EXPIRED; before its expire_time, or without one, it is FailedPrecondition NOT_EXPIRED, as the
// registry answers.
func (r *Registry) ExpireAgent(_ context.Context, req *registryv1.ExpireAgentRequest) (*registryv1.ExpireAgentResponse, error) {
	expirable := []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_PENDING, registryv1.AgentState_AGENT_STATE_ACTIVE,
		registryv1.AgentState_AGENT_STATE_SUSPENDED}
	if a := r.Agent(req.GetName()); a != nil && slices.Contains(expirable, a.GetState()) {
		now := time.Now()
		if r.Clock != nil {
			now = r.Clock()
		}
		if et := a.GetExpireTime(); !et.IsValid() || now.Before(et.AsTime()) {
			return nil, errs.FailedPrecondition("NOT_EXPIRED", "the agent has not expired")
		}
	}
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_EXPIRED, nil, expirable...)
	if err != nil {
		return nil, err
	}
	return &registryv1.ExpireAgentResponse{Agent: a}, nil
}

// SuspendAgent makes an ACTIVE agent SUSPENDED, recording the cause (operator when none); a SUSPENDED
// one is returned unchanged. The answer says whether the request made the current suspension and its
// cause.
func (r *Registry) SuspendAgent(_ context.Context, req *registryv1.SuspendAgentRequest) (*registryv1.SuspendAgentResponse, error) {
	answer := func(a *registryv1.Agent) *registryv1.SuspendAgentResponse {
		r.mu.Lock()
		defer r.mu.Unlock()
		s := r.suspensionLocked(req.GetName())
		return &registryv1.SuspendAgentResponse{Agent: a, SuspensionCause: s.cause,
			SuspendedByRequest: s.requestID != "" && s.requestID == req.GetRequestId()}
	}
	if a := r.Agent(req.GetName()); a != nil && a.GetState() == registryv1.AgentState_AGENT_STATE_SUSPENDED {
		return answer(a), nil
	}
	cause := req.GetCause()
	if cause == "" {
		cause = "operator"
	}
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_SUSPENDED,
		func(a *registryv1.Agent) {
			a.StateReason = req.GetReason()
			if r.suspensions == nil {
				r.suspensions = map[string]suspension{}
			}
			r.suspensions[a.GetName()] = suspension{cause: cause, requestID: req.GetRequestId()}
		}, registryv1.AgentState_AGENT_STATE_ACTIVE)
	if err != nil {
		return nil, err
	}
	return answer(a), nil
}

// ResumeAgent makes a SUSPENDED agent ACTIVE; with expected_cause, only a suspension of that cause
// (else FailedPrecondition SUSPENSION_CAUSE_MISMATCH, metadata cause, nothing changed).
func (r *Registry) ResumeAgent(_ context.Context, req *registryv1.ResumeAgentRequest) (*registryv1.ResumeAgentResponse, error) {
	if want := req.GetExpectedCause(); want != "" {
		r.mu.Lock()
		cur := r.suspensionLocked(req.GetName()).cause
		r.mu.Unlock()
		if cur != "" && cur != want {
			return nil, errs.FailedPrecondition("SUSPENSION_CAUSE_MISMATCH",
				fmt.Sprintf("the agent's suspension has cause %s, not %s", cur, want)).WithMetadata("cause", cur)
		}
	}
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_ACTIVE,
		func(a *registryv1.Agent) {
			a.StateReason = req.GetReason()
			delete(r.suspensions, a.GetName())
		}, registryv1.AgentState_AGENT_STATE_SUSPENDED)
	if err != nil {
		return nil, err
	}
	return &registryv1.ResumeAgentResponse{Agent: a}, nil
}

// CompleteRetirement makes a RETIRING agent RETIRED.
func (r *Registry) CompleteRetirement(_ context.Context, req *registryv1.CompleteRetirementRequest) (*registryv1.CompleteRetirementResponse, error) {
	if !req.GetVerifyTime().IsValid() || req.GetVerifyTime().AsTime().IsZero() {
		return nil, errs.InvalidArgument("verify_time", "verify_time is required")
	}
	a, err := r.transition(req.GetName(), req.GetRequestId(), registryv1.AgentState_AGENT_STATE_RETIRED, nil, registryv1.AgentState_AGENT_STATE_RETIRING)
	if err != nil {
		return nil, err
	}
	return &registryv1.CompleteRetirementResponse{Agent: a}, nil
}

// Issuer is a fake IssuerService holding clients in memory.
type Issuer struct {
	issuerv1.UnimplementedIssuerServiceServer
	mu         sync.Mutex
	clients    map[string]*issuerv1.Client // by resource name
	created    map[string]string           // request id -> client name
	tombstones map[string]bool             // names disabled before they existed: never created
}

// Tombstone makes every later CreateClient of the named client fail with FailedPrecondition, as the
// issuer does for a client disabled by deprovisioning.
func (i *Issuer) Tombstone(name string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.tombstone(name)
}

func (i *Issuer) tombstone(name string) {
	if i.tombstones == nil {
		i.tombstones = map[string]bool{}
	}
	i.tombstones[name] = true
}

// Clients returns copies of every client, in no particular order.
func (i *Issuer) Clients() []*issuerv1.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]*issuerv1.Client, 0, len(i.clients))
	for _, c := range i.clients {
		out = append(out, proto.Clone(c).(*issuerv1.Client))
	}
	return out
}

// Client returns a copy of the named client, or nil.
func (i *Issuer) Client(name string) *issuerv1.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c, ok := i.clients[name]; ok {
		return proto.Clone(c).(*issuerv1.Client)
	}
	return nil
}

// Put stores (or replaces) a client under its resource name.
func (i *Issuer) Put(c *issuerv1.Client) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.clients[c.GetName()] = proto.Clone(c).(*issuerv1.Client)
}

// CreateClient creates an ACTIVE client; a repeated request id returns the same client. A tombstoned
// client is FailedPrecondition, an existing one AlreadyExists.
func (i *Issuer) CreateClient(_ context.Context, req *issuerv1.CreateClientRequest) (*issuerv1.CreateClientResponse, error) {
	tenant, ok := strings.CutPrefix(req.GetParent(), "tenants/")
	if !ok || tenant == "" {
		return nil, errs.InvalidArgument("parent", "parent must be tenants/{tenant}")
	}
	if req.GetClient().GetClientId() == "" {
		return nil, errs.InvalidArgument("client.client_id", "client_id is required")
	}
	name := req.GetParent() + "/clients/" + req.GetClient().GetClientId()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.created == nil {
		i.created = map[string]string{}
	}
	if prev, ok := i.created[req.GetRequestId()]; ok && prev == name {
		return &issuerv1.CreateClientResponse{Client: proto.Clone(i.clients[name]).(*issuerv1.Client)}, nil
	}
	if i.tombstones[name] {
		return nil, errs.FailedPrecondition("CLIENT_TOMBSTONED", "the client was retired and cannot be created again")
	}
	if _, ok := i.clients[name]; ok {
		return nil, errs.AlreadyExists("CLIENT_EXISTS", "client already exists")
	}
	c := proto.Clone(req.GetClient()).(*issuerv1.Client)
	c.Name, c.Tenant, c.State, c.CreateTime = name, tenant, issuerv1.ClientState_CLIENT_STATE_ACTIVE, timestamppb.Now()
	i.clients[name] = c
	i.created[req.GetRequestId()] = name
	return &issuerv1.CreateClientResponse{Client: proto.Clone(c).(*issuerv1.Client)}, nil
}

// GetClient returns a client.
func (i *Issuer) GetClient(_ context.Context, req *issuerv1.GetClientRequest) (*issuerv1.GetClientResponse, error) {
	if c := i.Client(req.GetName()); c != nil {
		return &issuerv1.GetClientResponse{Client: c}, nil
	}
	return nil, errs.NotFound("CLIENT_NOT_FOUND", "client not found")
}

// DisableClient disables a client (idempotently); disabling a client that does not exist leaves a
// tombstone (and answers NotFound).
func (i *Issuer) DisableClient(_ context.Context, req *issuerv1.DisableClientRequest) (*issuerv1.DisableClientResponse, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	c, ok := i.clients[req.GetName()]
	if !ok {
		i.tombstone(req.GetName())
		return nil, errs.NotFound("CLIENT_NOT_FOUND", "client not found")
	}
	if c.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		c.State, c.DisableTime = issuerv1.ClientState_CLIENT_STATE_DISABLED, timestamppb.Now()
	}
	return &issuerv1.DisableClientResponse{Client: proto.Clone(c).(*issuerv1.Client)}, nil
}

// RevokeTokens records a revocation and answers with it (every request is kept in Requests).
func (i *Issuer) RevokeTokens(_ context.Context, req *issuerv1.RevokeTokensRequest) (*issuerv1.RevokeTokensResponse, error) {
	if req.GetParent() == "" {
		return nil, errs.InvalidArgument("parent", "parent is required")
	}
	return &issuerv1.RevokeTokensResponse{Revocation: &issuerv1.Revocation{
		Name: req.GetParent() + "/revocations/" + req.GetRequestId(), CreateTime: timestamppb.Now(),
	}}, nil
}

// CheckClient answers as the issuer's token endpoint and introspection would: an unknown or disabled
// client is refused (invalid_client) and its tokens are inactive; an active one is granted its scopes,
// resources and roles.
func (i *Issuer) CheckClient(_ context.Context, req *issuerv1.CheckClientRequest) (*issuerv1.CheckClientResponse, error) {
	c := i.Client(req.GetName())
	switch {
	case c == nil:
		return &issuerv1.CheckClientResponse{TokenRefused: true, TokenError: "invalid_client", TokenReason: "unknown_client",
			TokenInactiveReason: "unknown_client"}, nil
	case c.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE:
		return &issuerv1.CheckClientResponse{TokenRefused: true, TokenError: "invalid_client", TokenReason: "client_disabled",
			TokenInactiveReason: "client_disabled"}, nil
	}
	return &issuerv1.CheckClientResponse{TokenActive: true, Scopes: c.GetScopes(), Resources: c.GetResources(), Roles: c.GetRoles()}, nil
}

// Policy is a fake PolicyService answering with preset decisions per agent (default: allow).
type Policy struct {
	policyv1.UnimplementedPolicyServiceServer
	mu        sync.Mutex
	decisions map[string]*policyv1.Decision // by agent resource name
}

// Decide sets the decision for the agent with resource name agent.
func (p *Policy) Decide(agent string, d *policyv1.Decision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.decisions[agent] = proto.Clone(d).(*policyv1.Decision)
}

// EvaluateAdmission answers with the preset decision for the agent named in the request's agent
// document (field "name"), or an allow.
func (p *Policy) EvaluateAdmission(_ context.Context, req *policyv1.EvaluateAdmissionRequest) (*policyv1.EvaluateAdmissionResponse, error) {
	if req.GetTenant() == "" {
		return nil, errs.InvalidArgument("tenant", "tenant is required")
	}
	name := req.GetAgent().GetFields()["name"].GetStringValue()
	if name == "" {
		return nil, errs.InvalidArgument("agent.name", "agent document has no name")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.decisions[name]
	if !ok {
		d = &policyv1.Decision{Outcome: policyv1.Outcome_OUTCOME_ALLOW, Reasons: []string{"low risk template"}}
	}
	d = proto.Clone(d).(*policyv1.Decision)
	if d.GetDecisionId() == "" {
		d.DecisionId = "dec-" + req.GetRequestId()
	}
	d.BundleVersion = "test-bundle"
	return &policyv1.EvaluateAdmissionResponse{Decision: d}, nil
}
