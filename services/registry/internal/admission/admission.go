// Package admission implements the registry's Admission with the policy service: an update that
// escalates an ACTIVE or SUSPENDED agent (more scopes or roles, a higher risk tier, another
// credential type) is recorded only when the tenant's admission policy allows the agent as it would
// be after the change (PolicyService.EvaluateAdmission, the decision recorded by the policy
// service). Anything but an allow refuses the update, and so does a policy that does not answer.
package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/policydoc"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// DefaultTimeout bounds one policy evaluation.
const DefaultTimeout = 5 * time.Second

// RequestIDPrefix starts the request id of every policy decision the registry asks for.
const RequestIDPrefix = "registry-update:"

// OverrideSourcePrefix starts the source recorded with a policy's risk tier override; the bundle
// version follows.
const OverrideSourcePrefix = "policy-bundle:"

// maxMessageLen bounds the reasons quoted in an error message.
const maxMessageLen = 900

// Policy is what admission needs of the policy service (policyv1.PolicyServiceClient).
type Policy interface {
	EvaluateAdmission(ctx context.Context, in *policyv1.EvaluateAdmissionRequest, opts ...grpc.CallOption) (*policyv1.EvaluateAdmissionResponse, error)
}

// Config configures an Admission.
type Config struct {
	// Policy is the policy service's client, authenticated as a platform service identity whose
	// decisions the policy service records (see docs/policy-override.md). Required.
	Policy Policy
	// Timeout bounds one evaluation (default DefaultTimeout); a policy that does not answer in
	// time refuses the update as Unavailable.
	Timeout time.Duration
	// Logger logs refusals' causes; default slog.Default().
	Logger *slog.Logger
}

// Admission asks the policy service whether an escalating update may be recorded.
type Admission struct {
	policy  Policy
	timeout time.Duration
	log     *slog.Logger
}

var _ registry.Admission = (*Admission)(nil)

// New returns an Admission.
func New(cfg Config) (*Admission, error) {
	if cfg.Policy == nil {
		return nil, errors.New("admission: Config.Policy is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("admission: Timeout %s must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Admission{policy: cfg.Policy, timeout: cfg.Timeout, log: cfg.Logger}, nil
}

// AdmitUpdate asks the tenant's admission policy about after, the agent as the update would leave
// it, under a request id derived from the update's (RequestID); a dry run (registry.DryRun, a
// validate_only update) asks without a request id, so that no decision is recorded and none is
// replayed to the real update later. It returns:
//   - on ALLOW, after's classification with the policy's risk tier override (tier, reason and the
//     bundle version as source), or nil when the policy sets none (the registry keeps its own);
//   - on DENY (or any outcome it does not know), PermissionDenied POLICY_DENIED quoting the reasons;
//   - on REQUIRE_APPROVAL, FailedPrecondition APPROVAL_REQUIRED naming the approvals and reasons;
//   - when the policy service does not answer (unreachable, timeout), Unavailable POLICY_UNAVAILABLE:
//     retry with the same request id; never an allow.
func (a *Admission) AdmitUpdate(ctx context.Context, tenant string, before, after *registryv1.Agent) (*registryv1.Classification, error) {
	if after == nil {
		return nil, errs.Internal(errors.New("admission: no agent to admit"))
	}
	doc, err := policydoc.Agent(after)
	if err != nil {
		return nil, errs.Internal(fmt.Errorf("admission: agent as JSON: %w", err))
	}
	reqID := "" // a dry run (validate_only): no request id, so the policy service records nothing
	if !registry.DryRun(ctx) {
		if reqID, err = RequestID(ctx, tenant, before, after); err != nil {
			return nil, errs.Internal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	resp, err := a.policy.EvaluateAdmission(cctx, &policyv1.EvaluateAdmissionRequest{Tenant: tenant, Agent: doc, RequestId: reqID})
	if err != nil {
		return nil, a.callFailed(ctx, tenant, after.GetName(), reqID, err)
	}
	d := resp.GetDecision()
	switch d.GetOutcome() {
	case policyv1.Outcome_OUTCOME_ALLOW:
		return classification(after, d)
	case policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL:
		approvals := d.GetRequiredApprovals()
		msg := "policy requires approval by " + orNone(strings.Join(approvals, ", ")) + " for this change"
		return nil, errs.FailedPrecondition("APPROVAL_REQUIRED", clip(withReasons(msg, d.GetReasons()))).
			WithMetadata("required_approvals", strings.Join(approvals, ",")).
			WithMetadata("decision_id", d.GetDecisionId())
	default:
		return nil, errs.PermissionDenied("POLICY_DENIED", clip(withReasons("policy denied this change", d.GetReasons()))).
			WithMetadata("decision_id", d.GetDecisionId())
	}
}

// classification is after's classification with the decision's risk tier override, or nil when
// the decision carries none. A malformed override (the policy service never sends one) is refused.
func classification(after *registryv1.Agent, d *policyv1.Decision) (*registryv1.Classification, error) {
	o := d.GetRiskTierOverride()
	if o == nil {
		return nil, nil
	}
	tier := registryv1.RiskTier(registryv1.RiskTier_value[o.GetTier()])
	if tier == registryv1.RiskTier_RISK_TIER_UNSPECIFIED || strings.TrimSpace(o.GetReason()) == "" {
		return nil, errs.Internal(fmt.Errorf("admission: decision %s carries a malformed risk tier override %q/%q",
			d.GetDecisionId(), o.GetTier(), o.GetReason()))
	}
	a := &registryv1.Agent{Classification: after.GetClassification()}
	registry.ApplyRiskTierOverride(a, registry.RiskTierOverride{Tier: tier, Reason: o.GetReason(), Source: OverrideSourcePrefix + d.GetBundleVersion()})
	return a.GetClassification(), nil
}

// callFailed maps a failed evaluation to the update's error; nothing is ever allowed on an error.
func (a *Admission) callFailed(ctx context.Context, tenant, agent, reqID string, err error) error {
	e := errs.FromStatus(err)
	a.log.WarnContext(ctx, "admission of an agent update failed: refused", "tenant", tenant, "agent", agent,
		"policy_request_id", reqID, "error", err)
	switch e.Kind {
	case errs.KindUnavailable, errs.KindResourceExhausted:
		return errs.Unavailable("POLICY_UNAVAILABLE", "the policy service did not answer; nothing was changed: retry with the same request_id", err)
	case errs.KindInvalidArgument:
		if e.Field == "request_id" {
			// The policy service's own words: a request id reused for another change, or one
			// outside this identity's prefix (a misconfigured credential).
			return errs.InvalidArgument("request_id", "request_id: the policy service refused the decision's request id: "+e.Message)
		}
	}
	return errs.Internal(fmt.Errorf("admission: policy.EvaluateAdmission: %w", err))
}

// RequestID is the request id of the policy decision on an update: RequestIDPrefix and a hash of
// the tenant, the agent, its etag before the update and the update's request id
// (registry.UpdateRequestID), so that a retry of the update gets the decision its first attempt
// got while the same request id on a later version of the agent asks again. Without an update
// request id the hash covers the agent as it would be instead, so that the same change of the same
// version gets the same decision.
func RequestID(ctx context.Context, tenant string, before, after *registryv1.Agent) (string, error) {
	h := sha256.New()
	h.Write([]byte("agentid.registry.update-admission.v1\x00" + tenant + "\x00" + after.GetName() + "\x00" + before.GetEtag() + "\x00"))
	if id := registry.UpdateRequestID(ctx); id != "" {
		h.Write([]byte("request\x00" + id))
	} else {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(after)
		if err != nil {
			return "", fmt.Errorf("admission: request id: %w", err)
		}
		h.Write([]byte("agent\x00"))
		h.Write(b)
	}
	return RequestIDPrefix + hex.EncodeToString(h.Sum(nil)[:20]), nil
}

func withReasons(msg string, reasons []string) string {
	if len(reasons) == 0 {
		return msg
	}
	return msg + ": " + strings.Join(reasons, "; ")
}

func orNone(s string) string {
	if s == "" {
		return "(none named)"
	}
	return s
}

// clip keeps a message within maxMessageLen bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= maxMessageLen {
		return s
	}
	i := maxMessageLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
