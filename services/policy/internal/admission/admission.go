// Package admission is the admission decision point: it checks the caller, asks the policy engine
// whether an agent may be provisioned, and records every decision in the decision log.
package admission

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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

// Store records decisions (implemented by *eventstore.Store): Append and Load keep the decision
// made under each request id on stream POLICY; Publish and PublishWithID write the decision log on
// TELEMETRY.
type Store interface {
	Publish(ctx context.Context, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
	PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
	Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error)
	Load(ctx context.Context, tenant, aggType, aggID string) ([]eventstore.Event, uint64, error)
}

// Request asks whether an agent may be provisioned.
type Request struct {
	// Tenant is the tenant whose policy applies.
	Tenant string
	// Agent is the agent as registered.
	Agent *registryv1.Agent
	// RequestID is the idempotency key of the platform's service identities: the first decision made
	// under it answers every repeat of the same input. For other callers it is only a correlation.
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
	store  Store
	now    func() time.Time
	logger *slog.Logger
}

// New returns a Service; now defaults to time.Now and logger to slog.Default().
func New(eval Evaluator, store Store, now func() time.Time, logger *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Service{eval: eval, store: store, now: now, logger: logger}
}

// Evaluate decides whether req.Agent may be provisioned. Callers must be a platform-admin, the
// lifecycle worker, the registry (registry-service) or a tenant-admin of req.Tenant.
//
// Only the decisions of the platform's own service identities (RecordsDecisions, e.g. the lifecycle
// service's provisioning run) are recorded under their request id: the decision is appended to
// stream POLICY on an aggregate named after the request id, only if that aggregate does not exist
// yet, together with the SHA-256 of the canonical input (InputDigest). A repeat with the same input,
// or the loser of a concurrent race, answers that first decision without evaluating again; a repeat
// with another input is InvalidArgument on request_id and writes nothing. A decision that cannot be
// recorded is Unavailable (retry with the same request id).
//
// Every other call, and every call without a request id, is a dry run: evaluated afresh, nothing
// recorded on POLICY, so a caller cannot plant the answer a later provisioning run will get. Its
// decision log entry is marked dry_run and carries neither the request id nor a correlation equal
// to it, so it cannot pass for the decision a provisioning run got under that id.
//
// Every answered decision is published to telemetry.<tenant>.policy.decided (the decision log); a
// recorded decision under an event id derived from its record (DecisionLogEventID), on every repeat
// too, so a decision log entry lost to a crash after the record is written by the next repeat and
// never twice. A failed publish is logged and does not change the answer.
func (s *Service) Evaluate(ctx context.Context, req Request) (Decision, error) {
	if err := validate(req); err != nil {
		return Decision{}, err
	}
	p, _ := authn.PrincipalFrom(ctx)
	// An auditor (read-only, e.g. the plan job of an agents-as-code pipeline) gets dry runs only:
	// RecordsDecisions is false for it.
	if err := p.Authorize(req.Tenant, authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleAuditor, authn.RoleLifecycleWorker, authn.RoleRegistryService); err != nil {
		return Decision{}, err
	}
	if req.RequestID == "" || !RecordsDecisions(p) {
		d, rec, err := s.evaluate(ctx, req)
		if err != nil {
			return Decision{}, err
		}
		rec.RequestId, rec.DryRun = "", true
		s.publishDryRun(ctx, req, rec, d)
		return d, nil
	}
	if err := checkRequestIDPrefix(p, req); err != nil {
		return Decision{}, err
	}
	digest, err := InputDigest(req.Tenant, req.Agent)
	if err != nil {
		return Decision{}, errs.Internal(err)
	}
	aggID := DecisionAggregateID(req.RequestID)
	for range 2 {
		ev, found, err := s.recorded(ctx, req, aggID)
		if err != nil {
			return Decision{}, err
		}
		if !found {
			_, rec, err := s.evaluate(ctx, req)
			if err != nil {
				return Decision{}, err
			}
			rec.InputSha256 = digest
			subject := req.Agent.GetName()
			if subject == "" {
				subject = "tenants/" + req.Tenant
			}
			ev, err = s.store.Append(ctx, eventstore.Append{
				Tenant:          req.Tenant,
				AggregateType:   eventstore.AggregatePolicy,
				AggregateID:     aggID,
				ExpectedVersion: 0,
				IdempotencyKey:  aggID,
				Type:            EventType,
				Subject:         subject,
				Data:            rec,
				Metadata:        s.metadata(ctx, req),
			})
			switch {
			case errors.Is(err, eventstore.ErrConflict):
				continue // another evaluation of the request was recorded first: answer that one
			case errors.Is(err, eventstore.ErrInvalid):
				return Decision{}, errs.Internal(err)
			case err != nil:
				return Decision{}, notRecorded(req, err)
			}
		}
		rec, err := s.fromEvent(ctx, req, digest, ev)
		if err != nil {
			return Decision{}, err
		}
		d := FromProto(rec.GetDecision())
		s.publishRecorded(ctx, ev, rec, d)
		return d, nil
	}
	return Decision{}, notRecorded(req, errors.New("the decision record conflicted twice"))
}

// Request id prefixes of the service identities whose decisions are recorded: each may record
// under its own only, so that a leaked registry credential cannot record the decision a
// provisioning run's (predictable) request id will find, nor the reverse.
const (
	// RegistryRequestIDPrefix starts every request id of the registry (registry-service); it is
	// the registry's admission.RequestIDPrefix.
	RegistryRequestIDPrefix = "registry-update:"
	// ProvisioningRequestIDPrefix starts every request id of the lifecycle worker: its provisioning
	// runs' workflow ids, provision/<tenant>/<agent id> (then /policy), of the request's tenant.
	ProvisioningRequestIDPrefix = "provision/"
)

// checkRequestIDPrefix refuses a recorded decision whose request id is not the caller's own: the
// registry's must start with RegistryRequestIDPrefix, the lifecycle worker's with
// ProvisioningRequestIDPrefix and the request's tenant (InvalidArgument naming request_id). A
// platform-admin's are not bound; a principal holding both service roles may use either prefix.
func checkRequestIDPrefix(p *authn.Principal, req Request) error {
	if p.IsPlatformAdmin() {
		return nil
	}
	var allowed []string
	if p.IsRegistryService() {
		allowed = append(allowed, RegistryRequestIDPrefix)
	}
	if p.IsLifecycleWorker() {
		allowed = append(allowed, ProvisioningRequestIDPrefix+req.Tenant+"/")
	}
	for _, prefix := range allowed {
		if strings.HasPrefix(req.RequestID, prefix) {
			return nil
		}
	}
	return errs.InvalidArgument("request_id", fmt.Sprintf("request_id: %q does not start with %s, the prefix of this caller's request ids (a service records decisions under its own request ids only)",
		req.RequestID, strings.Join(quoteAll(allowed), " or ")))
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// RecordsDecisions reports whether the decisions of p are recorded under their request id: only
// those of the platform's own service identities (the lifecycle worker, the registry, or a
// platform-admin of tenant "system", acting for itself) are; every other caller gets dry runs.
func RecordsDecisions(p *authn.Principal) bool {
	return (p.IsPlatformAdmin() || p.IsLifecycleWorker() || p.IsRegistryService()) && p.Kind == authn.KindService && p.OnBehalfOf == ""
}

// DecisionAggregateID is the POLICY aggregate that records the admission decision of a request id:
// "admission-" and the first 128 bits of the id's SHA-256 in hex.
func DecisionAggregateID(requestID string) string {
	sum := sha256.Sum256([]byte(requestID))
	return DecisionPoint + "-" + hex.EncodeToString(sum[:16])
}

// InputDigest is the SHA-256 (hex) of the canonical admission input: the tenant and the
// deterministic protobuf encoding of the agent without the fields the platform changes as it keeps
// its books (state, state_reason, etag, update_time), i.e. everything a policy judges the agent by.
func InputDigest(tenant string, agent *registryv1.Agent) (string, error) {
	a, ok := proto.Clone(agent).(*registryv1.Agent)
	if !ok || a == nil {
		return "", errors.New("admission input: no agent")
	}
	a.State, a.StateReason, a.Etag, a.UpdateTime = registryv1.AgentState(0), "", "", nil
	a.ProtoReflect().SetUnknown(nil)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return "", fmt.Errorf("admission input: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("agentid.admission.v1\x00" + tenant + "\x00"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DecisionLogEventID is the id of the decision log event of a recorded decision, derived from the id
// of its POLICY record: a UUIDv7 with the record's timestamp and the rest from a hash of the record
// id, the same however often the decision is published.
func DecisionLogEventID(recordID string) string {
	sum := sha256.Sum256([]byte("agentid.policy.decision-log\x00" + recordID))
	var u uuid.UUID
	copy(u[:], sum[:16])
	if r, err := uuid.Parse(recordID); err == nil {
		copy(u[:6], r[:6]) // the record's millisecond timestamp
	}
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 9562 variant
	return u.String()
}

// notRecorded is the answer when the decision could not be recorded (nor read back).
func notRecorded(req Request, err error) error {
	return errs.Unavailable("DECISION_NOT_RECORDED", "the decision could not be recorded; retry with the same request_id", err).
		WithMetadata("request_id", req.RequestID)
}

// recorded returns the event recording the decision under the request's id, if there is one.
func (s *Service) recorded(ctx context.Context, req Request, aggID string) (eventstore.Event, bool, error) {
	events, _, err := s.store.Load(ctx, req.Tenant, eventstore.AggregatePolicy, aggID)
	if err != nil {
		return eventstore.Event{}, false, notRecorded(req, err)
	}
	for _, e := range events {
		if e.Type == EventType {
			return e, true, nil
		}
	}
	return eventstore.Event{}, false, nil
}

// fromEvent reads a recorded decision and answers it only if it was made for this request id and
// the same input (digest), and was written as Evaluate writes records: by a service actor acting
// for itself (RecordsDecisions), with an input digest, not as a dry run.
//
// A record failing any of these checks is refused exactly like a request id reused for another
// input: InvalidArgument on request_id, nothing written. That is the fail-closed choice because the
// two alternatives both let the record's writer steer the outcome: answering it hands a caller the
// decision someone else planted, and evaluating afresh (the record cannot be replaced: appends to
// the aggregate are conditional on it being empty) would answer one request id with two decisions,
// or with one nobody can audit. Refusing keeps the run from proceeding on a decision the platform
// did not make, and an operator sees the request id in the error.
func (s *Service) fromEvent(ctx context.Context, req Request, digest string, e eventstore.Event) (*policyv1.DecisionRecorded, error) {
	rec, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](e)
	if err != nil {
		return nil, errs.Internal(fmt.Errorf("decision record %s: %w", e.ID, err))
	}
	recorded := rec.GetInputSha256()
	trusted := e.Metadata.Actor.Kind == eventstore.ActorService && e.Metadata.OnBehalfOf == "" && !rec.GetDryRun()
	if !trusted || rec.GetDecisionPoint() != DecisionPoint || rec.GetRequestId() != req.RequestID || recorded == "" ||
		subtle.ConstantTimeCompare([]byte(recorded), []byte(digest)) != 1 {
		if !trusted || recorded == "" {
			s.logger.WarnContext(ctx, "admission decision record refused: not written by a service for itself, or without an input digest",
				"tenant", req.Tenant, "request_id", req.RequestID, "record_id", e.ID,
				"actor_kind", string(e.Metadata.Actor.Kind), "actor", e.Metadata.Actor.ID,
				"on_behalf_of", e.Metadata.OnBehalfOf, "has_digest", recorded != "", "dry_run", rec.GetDryRun())
		}
		return nil, errs.InvalidArgument("request_id", "request id was used for a different admission input").
			WithMetadata("request_id", req.RequestID)
	}
	return rec, nil
}

// evaluate asks the policy and returns the decision with its decision log record.
func (s *Service) evaluate(ctx context.Context, req Request) (Decision, *policyv1.DecisionRecorded, error) {
	agent, err := agentInput(req.Agent)
	if err != nil {
		return Decision{}, nil, errs.Internal(err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Decision{}, nil, errs.Internal(fmt.Errorf("decision id: %w", err))
	}
	input := map[string]any{
		"tenant": req.Tenant,
		"agent":  agent,
		"now":    s.now().UTC().Format(time.RFC3339Nano),
	}
	d := Decision{Decision: s.eval.Admission(ctx, input), ID: id.String()}
	s.logger.InfoContext(ctx, "admission decided", "tenant", req.Tenant, "agent", req.Agent.GetName(),
		"decision_id", d.ID, "outcome", string(d.Outcome), "required_approvals", d.RequiredApprovals,
		"bundle_version", d.BundleVersion, "request_id", req.RequestID, "risk_tier_override", overrideTier(d.Override))
	in, err := structpb.NewStruct(input)
	if err != nil {
		return Decision{}, nil, errs.Internal(fmt.Errorf("decision input is not representable: %w", err))
	}
	rec := &policyv1.DecisionRecorded{
		Tenant:        req.Tenant,
		DecisionPoint: DecisionPoint,
		Subject:       req.Agent.GetName(),
		Decision:      ToProto(d),
		Input:         in,
		RequestId:     req.RequestID,
	}
	return d, rec, nil
}

// metadata is the event metadata of a decision: the caller, with the request id as correlation
// when the call carried none.
func (s *Service) metadata(ctx context.Context, req Request) eventstore.Metadata {
	md := grpcx.EventMetadata(ctx, req.Tenant)
	if md.CorrelationID == "" {
		md.CorrelationID = req.RequestID
	}
	return md
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

// publishDryRun writes a dry run's decision to the decision log; failures are logged only. The
// entry keeps the caller's request id out of its correlation (rec carries none and is marked
// dry_run): a caller must not be able to file a decision next to the one a provisioning run gets
// under that id.
func (s *Service) publishDryRun(ctx context.Context, req Request, rec *policyv1.DecisionRecorded, d Decision) {
	subject := "telemetry." + req.Tenant + "." + EventType
	md := grpcx.EventMetadata(ctx, req.Tenant)
	if req.RequestID != "" && md.CorrelationID == req.RequestID {
		md.CorrelationID = ""
	}
	if _, err := s.store.Publish(ctx, subject, EventType, req.Agent.GetName(), rec, md); err != nil {
		s.logger.ErrorContext(ctx, "decision not published to the decision log", "tenant", req.Tenant,
			"decision_id", d.ID, "subject", subject, "error", err)
	}
}

// publishRecorded writes a recorded decision to the decision log as its record holds it (subject,
// caller, correlation), under the event id derived from the record's; failures are logged only.
func (s *Service) publishRecorded(ctx context.Context, ev eventstore.Event, rec *policyv1.DecisionRecorded, d Decision) {
	subject := "telemetry." + rec.GetTenant() + "." + EventType
	if _, err := s.store.PublishWithID(ctx, DecisionLogEventID(ev.ID), subject, EventType, ev.Subject, rec, ev.Metadata); err != nil {
		s.logger.ErrorContext(ctx, "decision not published to the decision log", "tenant", rec.GetTenant(),
			"decision_id", d.ID, "subject", subject, "record_id", ev.ID, "error", err)
	}
}

// ToProto converts a decision to its API form.
func ToProto(d Decision) *policyv1.Decision {
	out := &policyv1.Decision{
		DecisionId:        d.ID,
		Outcome:           outcomeToProto(d.Outcome),
		Reasons:           d.Reasons,
		RequiredApprovals: d.RequiredApprovals,
		BundleVersion:     d.BundleVersion,
	}
	if o := d.Override; o != nil {
		out.RiskTierOverride = &policyv1.RiskTierOverride{Tier: o.Tier, Reason: o.Reason}
	}
	return out
}

// FromProto converts a decision from its API form; an unknown outcome is a deny.
func FromProto(d *policyv1.Decision) Decision {
	out := Decision{ID: d.GetDecisionId(), Decision: engine.Decision{
		Outcome:           engine.OutcomeDeny,
		Reasons:           d.GetReasons(),
		RequiredApprovals: d.GetRequiredApprovals(),
		BundleVersion:     d.GetBundleVersion(),
	}}
	switch d.GetOutcome() {
	case policyv1.Outcome_OUTCOME_ALLOW:
		out.Outcome = engine.OutcomeAllow
	case policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL:
		out.Outcome = engine.OutcomeRequireApproval
	}
	if o := d.GetRiskTierOverride(); o != nil && out.Outcome != engine.OutcomeDeny {
		out.Override = &engine.Override{Tier: o.GetTier(), Reason: o.GetReason()}
	}
	return out
}

// overrideTier is the tier of o for logs, "" without an override.
func overrideTier(o *engine.Override) string {
	if o == nil {
		return ""
	}
	return o.Tier
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
