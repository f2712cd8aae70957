package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// AdmissionQuery is the rule the admission decision point evaluates.
const AdmissionQuery = "data.agentid.admission.decision"

// EvaluationFailed is the one reason of a decision the policy could not make; the cause is logged.
const EvaluationFailed = "policy evaluation failed"

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
}

// Engine evaluates a compiled bundle. It is safe for concurrent use.
type Engine struct {
	admission rego.PreparedEvalQuery
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
	opts := []func(*rego.Rego){
		rego.Query(AdmissionQuery),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
	}
	for _, f := range b.files {
		if !f.IsTest() {
			opts = append(opts, rego.Module(f.Name, f.Source))
		}
	}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy engine: compile bundle: %w", err)
	}
	return &Engine{admission: pq, version: b.Version(), logger: logger}, nil
}

// BundleVersion is the version of the compiled bundle.
func (e *Engine) BundleVersion() string { return e.version }

// Admission evaluates the admission decision point. It never fails: an evaluation error, an
// undefined or malformed decision, or an unknown outcome is a deny with the reason
// EvaluationFailed, and the cause is logged.
func (e *Engine) Admission(ctx context.Context, input map[string]any) Decision {
	d, err := e.eval(ctx, input)
	if err != nil {
		e.logger.ErrorContext(ctx, "policy evaluation failed; denying",
			"decision_point", "admission", "bundle_version", e.version, "error", err)
		return Decision{Outcome: OutcomeDeny, Reasons: []string{EvaluationFailed}, BundleVersion: e.version}
	}
	d.BundleVersion = e.version
	return d
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
