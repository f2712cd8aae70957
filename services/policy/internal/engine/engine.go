package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// AdmissionQuery is the rule the admission decision point evaluates.
const AdmissionQuery = "data.agentid.admission.decision"

// EvaluationFailed is the one reason of a decision the policy could not make; the cause is logged.
const EvaluationFailed = "policy evaluation failed"

// OverrideRule is the bundle rule whose value overrides the registry's derived risk tier of the
// agent under admission: an object {"tier": "LOW" | "MODERATE" | "HIGH", "reason": string}. It is
// optional; undefined means no override.
const OverrideRule = "risk_tier_override"

// OverrideQuery is the query of OverrideRule.
const OverrideQuery = "data.agentid.admission." + OverrideRule

// Outcome is the result of a decision.
type Outcome string

// The outcomes a policy may produce.
const (
	// OutcomeAllow allows without a human.
	OutcomeAllow Outcome = "allow"
	// OutcomeRequireApproval allows once the required approvals are given.
	OutcomeRequireApproval Outcome = "require_approval"
	// OutcomeDeny denies.
	OutcomeDeny Outcome = "deny"
)

// Decision is the answer of one evaluation.
type Decision struct {
	// Outcome is what the policy decided.
	Outcome Outcome
	// Reasons has one human-readable line per rule that fired.
	Reasons []string
	// RequiredApprovals are the approver roles needed, in order, for OutcomeRequireApproval.
	RequiredApprovals []string
	// BundleVersion is the version of the bundle that decided.
	BundleVersion string
	// Override is the risk tier the bundle's OverrideRule sets, nil when it sets none. Only allow and
	// require_approval decisions carry one.
	Override *Override
}

// Override is a policy's risk tier override of one agent.
type Override struct {
	// Tier is the registry's RiskTier enum value name: RISK_TIER_LOW, RISK_TIER_MODERATE or
	// RISK_TIER_HIGH.
	Tier string
	// Reason says why (never empty).
	Reason string
}

// overrideTiers maps the tiers OverrideRule may name (short or full enum name) to the enum name.
var overrideTiers = map[string]string{
	"LOW": "RISK_TIER_LOW", "MODERATE": "RISK_TIER_MODERATE", "HIGH": "RISK_TIER_HIGH",
	"RISK_TIER_LOW": "RISK_TIER_LOW", "RISK_TIER_MODERATE": "RISK_TIER_MODERATE", "RISK_TIER_HIGH": "RISK_TIER_HIGH",
}

// maxOverrideReasonLen bounds an override's reason (the registry records at most 1000 characters).
const maxOverrideReasonLen = 1000

// Engine evaluates a compiled bundle. It is safe for concurrent use.
type Engine struct {
	admission rego.PreparedEvalQuery
	override  rego.PreparedEvalQuery
	version   string
	logger    *slog.Logger
}

// New compiles the bundle's policy modules (tests excluded) once; a bundle that does not compile
// is an error here, at start-up, rather than a deny on every request.
func New(ctx context.Context, b Bundle, logger *slog.Logger) (*Engine, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if len(b.files) == 0 {
		return nil, errors.New("policy engine: empty bundle")
	}
	prepare := func(query string) (rego.PreparedEvalQuery, error) {
		opts := []func(*rego.Rego){
			rego.Query(query),
			rego.SetRegoVersion(ast.RegoV1),
			rego.StrictBuiltinErrors(true),
		}
		for _, f := range b.files {
			if !f.IsTest() {
				opts = append(opts, rego.Module(f.Name, f.Source))
			}
		}
		return rego.New(opts...).PrepareForEval(ctx)
	}
	pq, err := prepare(AdmissionQuery)
	if err != nil {
		return nil, fmt.Errorf("policy engine: compile bundle: %w", err)
	}
	oq, err := prepare(OverrideQuery)
	if err != nil {
		return nil, fmt.Errorf("policy engine: compile bundle (%s): %w", OverrideQuery, err)
	}
	return &Engine{admission: pq, override: oq, version: b.Version(), logger: logger}, nil
}

// BundleVersion is the version of the compiled bundle.
func (e *Engine) BundleVersion() string { return e.version }

// Admission evaluates the admission decision point. It never fails: an evaluation error, an
// undefined or malformed decision, or an unknown outcome is a deny with the reason
// EvaluationFailed, and the cause is logged.
//
// The bundle's OverrideRule is evaluated with the decision. A well-formed override rides on an
// allow or require_approval decision (a deny carries none); a malformed one (not an object, an
// unknown tier, an empty reason, an unknown key, conflicting values) fails closed: the decision
// becomes a deny whose reason names the rule.
func (e *Engine) Admission(ctx context.Context, input map[string]any) Decision {
	d, err := e.eval(ctx, input)
	if err != nil {
		e.logger.ErrorContext(ctx, "policy evaluation failed; denying",
			"decision_point", "admission", "bundle_version", e.version, "error", err)
		return Decision{Outcome: OutcomeDeny, Reasons: []string{EvaluationFailed}, BundleVersion: e.version}
	}
	d.BundleVersion = e.version
	o, err := e.evalOverride(ctx, input)
	if err != nil {
		e.logger.ErrorContext(ctx, "policy risk tier override malformed; denying",
			"decision_point", "admission", "rule", OverrideQuery, "bundle_version", e.version, "error", err)
		reasons := []string{"policy rule " + OverrideRule + " is malformed: " + err.Error()}
		if d.Outcome == OutcomeDeny {
			reasons = append(slices.Clone(d.Reasons), reasons...)
		}
		return Decision{Outcome: OutcomeDeny, Reasons: reasons, BundleVersion: e.version}
	}
	if d.Outcome != OutcomeDeny {
		d.Override = o
	}
	return d
}

// evalOverride evaluates OverrideRule: nil when it is undefined, an error (safe to show: it never
// carries the evaluator's text) when its value is malformed or cannot be computed.
func (e *Engine) evalOverride(ctx context.Context, input map[string]any) (*Override, error) {
	rs, err := e.override.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		e.logger.ErrorContext(ctx, "policy risk tier override not evaluated", "rule", OverrideQuery, "error", err)
		return nil, errors.New("it could not be evaluated (conflicting values or a built-in error)")
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	if len(rs) > 1 || len(rs[0].Expressions) > 1 {
		return nil, errors.New("it has more than one result")
	}
	return ParseOverride(rs[0].Expressions[0].Value)
}

// ParseOverride checks the shape OverrideRule must produce: an object {"tier": string, "reason":
// string} and nothing else, tier one of LOW, MODERATE, HIGH (or their RISK_TIER_ names), reason not
// blank and at most 1000 characters. The tier is returned as its RISK_TIER_ name.
func ParseOverride(v any) (*Override, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the value is a %s, want an object {tier, reason}", typeName(v))
	}
	for k := range obj {
		if k != "tier" && k != "reason" {
			return nil, fmt.Errorf("unknown key %q (want tier and reason)", k)
		}
	}
	raw, ok := obj["tier"].(string)
	if !ok {
		return nil, errors.New("tier is missing or not a string")
	}
	tier, ok := overrideTiers[strings.ToUpper(strings.TrimSpace(raw))]
	if !ok {
		return nil, fmt.Errorf("tier %q is not LOW, MODERATE or HIGH", raw)
	}
	reason, ok := obj["reason"].(string)
	switch {
	case !ok:
		return nil, errors.New("reason is missing or not a string")
	case strings.TrimSpace(reason) == "":
		return nil, errors.New("reason is empty: an override must say why")
	case utf8.RuneCountInString(reason) > maxOverrideReasonLen:
		return nil, fmt.Errorf("reason is longer than %d characters", maxOverrideReasonLen)
	case strings.ContainsAny(reason, "\x00"):
		return nil, errors.New("reason contains a NUL character")
	}
	return &Override{Tier: tier, Reason: strings.TrimSpace(reason)}, nil
}

// typeName names the JSON type of a Rego value, for messages.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return "number"
	}
}

func (e *Engine) eval(ctx context.Context, input map[string]any) (Decision, error) {
	rs, err := e.admission.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate %s: %w", AdmissionQuery, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{}, fmt.Errorf("%s is undefined", AdmissionQuery)
	}
	if len(rs) > 1 || len(rs[0].Expressions) > 1 {
		return Decision{}, fmt.Errorf("%s has more than one result", AdmissionQuery)
	}
	return parseDecision(rs[0].Expressions[0].Value)
}

// parseDecision checks the shape the policy must produce:
// {"outcome": string, "reasons": [string], "required_approvals": [string]}, no other keys, a known
// outcome, and approvals exactly when the outcome is require_approval.
func parseDecision(v any) (Decision, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return Decision{}, fmt.Errorf("decision is a %T, want an object", v)
	}
	for k := range obj {
		if k != "outcome" && k != "reasons" && k != "required_approvals" {
			return Decision{}, fmt.Errorf("decision has unknown key %q", k)
		}
	}
	outcome, ok := obj["outcome"].(string)
	if !ok {
		return Decision{}, fmt.Errorf("decision.outcome is a %T, want a string", obj["outcome"])
	}
	d := Decision{Outcome: Outcome(outcome)}
	switch d.Outcome {
	case OutcomeAllow, OutcomeRequireApproval, OutcomeDeny:
	default:
		return Decision{}, fmt.Errorf("decision.outcome %q is not allow, require_approval or deny", outcome)
	}
	var err error
	if d.Reasons, err = stringList(obj, "reasons", true); err != nil {
		return Decision{}, err
	}
	if d.RequiredApprovals, err = stringList(obj, "required_approvals", false); err != nil {
		return Decision{}, err
	}
	switch {
	case d.Outcome == OutcomeRequireApproval && len(d.RequiredApprovals) == 0:
		return Decision{}, errors.New("decision require_approval names no approvals")
	case d.Outcome != OutcomeRequireApproval && len(d.RequiredApprovals) > 0:
		return Decision{}, fmt.Errorf("decision %s names approvals", d.Outcome)
	}
	return d, nil
}

func stringList(obj map[string]any, key string, required bool) ([]string, error) {
	raw, present := obj[key]
	if !present {
		if required {
			return nil, fmt.Errorf("decision.%s is missing", key)
		}
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("decision.%s is a %T, want an array", key, raw)
	}
	out := make([]string, 0, len(list))
	for i, item := range list {
		s, ok := item.(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("decision.%s[%d] is not a non-empty string", key, i)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return slices.Clip(out), nil
}
