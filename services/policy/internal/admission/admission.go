// Package admission is the admission decision point: it checks the caller, asks the policy engine
// whether an agent may be provisioned, and records every decision in the decision log.
package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/internal/engine"
)

// DecisionPoint is the name of this decision point in the decision log.
const DecisionPoint = "admission"

// EventType is the type of the decision log's events.
const EventType = "policy.decided"

// maxRequestIDLen bounds request ids, which travel in event headers.
const maxRequestIDLen = 128

// Evaluator decides admissions; it never fails (a policy that cannot decide denies).
type Evaluator interface {
	Admission(ctx context.Context, input map[string]any) engine.Decision
}

// Publisher records telemetry events (implemented by *eventstore.Store).
type Publisher interface {
	Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// Request asks whether an agent may be provisioned.
type Request struct {
	// Tenant is the tenant whose policy applies.
	Tenant string
	// Agent is the agent as registered.
	Agent *registryv1.Agent
	// RequestID is the caller's idempotency key, recorded with the decision.
	RequestID string
}

// Decision is an evaluated and recorded admission decision.
type Decision struct {
	engine.Decision
	// ID identifies the decision in the decision log (a UUIDv7).
	ID string
}

// Service evaluates admissions.
type Service struct {
	eval   Evaluator
	pub    Publisher
	now    func() time.Time
	logger *slog.Logger
}

// New returns a Service; now defaults to time.Now and logger to slog.Default().
func New(eval Evaluator, pub Publisher, now func() time.Time, logger *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{eval: eval, pub: pub, now: now, logger: logger}
}

// Evaluate decides whether req.Agent may be provisioned. Callers must be a platform-admin or a
// tenant-admin of req.Tenant. Every decision is published to telemetry.<tenant>.policy.decided; a
// failed publish is logged and does not change the answer.
func (s *Service) Evaluate(ctx context.Context, req Request) (Decision, error) {
	if err := validate(req); err != nil {
		return Decision{}, err
	}
	p, _ := authn.PrincipalFrom(ctx)
	if err := p.Authorize(req.Tenant, authn.RolePlatformAdmin, authn.RoleTenantAdmin); err != nil {
		return Decision{}, err
	}
	agent, err := agentInput(req.Agent)
	if err != nil {
		return Decision{}, errs.Internal(err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Decision{}, errs.Internal(fmt.Errorf("decision id: %w", err))
	}
	input := map[string]any{
		"tenant": req.Tenant,
		"agent":  agent,
		"now":    s.now().UTC().Format(time.RFC3339Nano),
	}
	d := Decision{Decision: s.eval.Admission(ctx, input), ID: id.String()}
	s.logger.InfoContext(ctx, "admission decided", "tenant", req.Tenant, "agent", req.Agent.GetName(),
		"decision_id", d.ID, "outcome", string(d.Outcome), "required_approvals", d.RequiredApprovals,
		"bundle_version", d.BundleVersion)
	s.record(ctx, p, req, input, d)
	return d, nil
}

func validate(req Request) error {
	switch {
	case req.Tenant == "":
		return errs.InvalidArgument("tenant", "tenant is required")
	case !authn.ValidTenant(req.Tenant):
		return errs.InvalidArgument("tenant", "tenant must match ^[a-z][a-z0-9-]{1,62}$")
	case req.Agent == nil:
		return errs.InvalidArgument("agent", "agent is required")
	case req.Agent.GetTenant() != "" && req.Agent.GetTenant() != req.Tenant:
		return errs.InvalidArgument("agent.tenant", "agent.tenant must be the request's tenant")
	case req.Agent.GetName() != "" && !strings.HasPrefix(req.Agent.GetName(), "tenants/"+req.Tenant+"/agents/"):
		return errs.InvalidArgument("agent.name", "agent.name must be tenants/"+req.Tenant+"/agents/{agent}")
	case strings.ContainsAny(req.Agent.GetName(), "\r\n"):
		return errs.InvalidArgument("agent.name", "agent.name must not contain line breaks")
	case len(req.RequestID) > maxRequestIDLen:
		return errs.InvalidArgument("request_id", fmt.Sprintf("request_id must be at most %d characters", maxRequestIDLen))
	case strings.ContainsAny(req.RequestID, "\r\n"):
		return errs.InvalidArgument("request_id", "request_id must not contain line breaks")
	}
	return nil
}

// agentInput renders the agent in its canonical JSON form (enum names, camelCase, zero values
// omitted), the shape the policy reads.
func agentInput(a *registryv1.Agent) (map[string]any, error) {
	b, err := protojson.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("render agent for policy input: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("render agent for policy input: %w", err)
	}
	return m, nil
}

// record publishes the decision to the decision log; failures are logged only.
func (s *Service) record(ctx context.Context, p *authn.Principal, req Request, input map[string]any, d Decision) {
	log := s.logger.With("tenant", req.Tenant, "decision_id", d.ID)
	in, err := structpb.NewStruct(input)
	if err != nil {
		log.ErrorContext(ctx, "decision not recorded: input is not representable", "error", err)
		return
	}
	ev := &policyv1.DecisionRecorded{
		Tenant:        req.Tenant,
		DecisionPoint: DecisionPoint,
		Subject:       req.Agent.GetName(),
		Decision:      ToProto(d),
		Input:         in,
		RequestId:     req.RequestID,
	}
	md := grpcx.EventMetadata(ctx, req.Tenant)
	if md.CorrelationID == "" {
		md.CorrelationID = req.RequestID
	}
	subject := "telemetry." + req.Tenant + "." + EventType
	if _, err := s.pub.Publish(ctx, subject, EventType, req.Agent.GetName(), ev, md); err != nil {
		log.ErrorContext(ctx, "decision not recorded: publish failed", "subject", subject, "error", err)
	}
}

// ToProto converts a decision to its API form.
func ToProto(d Decision) *policyv1.Decision {
	return &policyv1.Decision{
		DecisionId:        d.ID,
		Outcome:           outcomeToProto(d.Outcome),
		Reasons:           d.Reasons,
		RequiredApprovals: d.RequiredApprovals,
		BundleVersion:     d.BundleVersion,
	}
}

func outcomeToProto(o engine.Outcome) policyv1.Outcome {
	switch o {
	case engine.OutcomeAllow:
		return policyv1.Outcome_OUTCOME_ALLOW
	case engine.OutcomeRequireApproval:
		return policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL
	default:
		return policyv1.Outcome_OUTCOME_DENY
	}
}
