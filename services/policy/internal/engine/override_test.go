package engine_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/agentid/agentid/services/policy/internal/engine"
)

// overrideEngine compiles a bundle of the given decision and risk_tier_override rules.
func overrideEngine(t *testing.T, decision, override string) (*engine.Engine, engine.Bundle) {
	t.Helper()
	src := "package agentid.admission\n\n" + decision + "\n\n" + override + "\n"
	b, err := engine.LoadDir(writeBundle(t, map[string]string{"admission.rego": src}))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("bundle should compile: %v", err)
	}
	return e, b
}

const (
	allowDecision    = `decision := {"outcome": "allow", "reasons": ["ok"], "required_approvals": []}`
	approvalDecision = `decision := {"outcome": "require_approval", "reasons": ["needs owner"], "required_approvals": ["owner"]}`
	denyDecision     = `decision := {"outcome": "deny", "reasons": ["no"], "required_approvals": []}`
)

func TestRiskTierOverride(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		override string
		want     *engine.Override
		outcome  engine.Outcome
	}{
		{name: "no override rule", decision: allowDecision, override: "", outcome: engine.OutcomeAllow},
		{name: "override undefined for this input", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": "payments"} if input.agent.function == "payments"`,
			outcome:  engine.OutcomeAllow},
		{name: "short tier name", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": "handles refunds"}`,
			want:     &engine.Override{Tier: "RISK_TIER_HIGH", Reason: "handles refunds"}, outcome: engine.OutcomeAllow},
		{name: "enum tier name, lower case", decision: approvalDecision,
			override: `risk_tier_override := {"tier": "risk_tier_moderate", "reason": "  vendor data  "}`,
			want:     &engine.Override{Tier: "RISK_TIER_MODERATE", Reason: "vendor data"}, outcome: engine.OutcomeRequireApproval},
		{name: "override computed from the input", decision: allowDecision,
			override: `risk_tier_override := {"tier": "LOW", "reason": sprintf("%s is a sandbox tenant", [input.tenant])}`,
			want:     &engine.Override{Tier: "RISK_TIER_LOW", Reason: "acme is a sandbox tenant"}, outcome: engine.OutcomeAllow},
		{name: "a deny carries no override", decision: denyDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": "x"}`, outcome: engine.OutcomeDeny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, b := overrideEngine(t, tt.decision, tt.override)
			d := e.Admission(context.Background(), input(t, templateAgent()))
			if d.Outcome != tt.outcome {
				t.Fatalf("outcome = %s (%q), want %s", d.Outcome, d.Reasons, tt.outcome)
			}
			if d.BundleVersion != b.Version() {
				t.Errorf("bundle version = %q, want %q", d.BundleVersion, b.Version())
			}
			switch {
			case tt.want == nil && d.Override != nil:
				t.Errorf("override = %+v, want none", *d.Override)
			case tt.want != nil && (d.Override == nil || *d.Override != *tt.want):
				t.Errorf("override = %+v, want %+v", d.Override, *tt.want)
			}
		})
	}
}

func TestMalformedRiskTierOverrideDenies(t *testing.T) {
	tests := []struct {
		name     string
		decision string
		override string
		want     string // in the override's reason
		keep     []string
	}{
		{name: "unknown tier", decision: allowDecision,
			override: `risk_tier_override := {"tier": "EXTREME", "reason": "x"}`, want: `tier "EXTREME" is not LOW, MODERATE or HIGH`},
		{name: "unspecified tier", decision: allowDecision,
			override: `risk_tier_override := {"tier": "RISK_TIER_UNSPECIFIED", "reason": "x"}`, want: "is not LOW, MODERATE or HIGH"},
		{name: "empty reason", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": ""}`, want: "reason is empty"},
		{name: "blank reason", decision: approvalDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": "   "}`, want: "reason is empty"},
		{name: "reason missing", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH"}`, want: "reason is missing"},
		{name: "reason too long", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": concat("", [x | some i in numbers.range(1, 1001); x := "a"])}`,
			want:     "longer than 1000"},
		{name: "tier not a string", decision: allowDecision,
			override: `risk_tier_override := {"tier": 3, "reason": "x"}`, want: "tier is missing or not a string"},
		{name: "not an object", decision: allowDecision,
			override: `risk_tier_override := "HIGH"`, want: "is a string, want an object"},
		{name: "unknown key", decision: allowDecision,
			override: `risk_tier_override := {"tier": "HIGH", "reason": "x", "until": "2031"}`, want: `unknown key "until"`},
		{name: "conflicting values", decision: allowDecision,
			override: "risk_tier_override := {\"tier\": \"HIGH\", \"reason\": \"a\"} if true\nrisk_tier_override := {\"tier\": \"LOW\", \"reason\": \"b\"} if true",
			want:     "could not be evaluated"},
		{name: "a deny keeps its reasons", decision: denyDecision,
			override: `risk_tier_override := {"tier": "SEVERE", "reason": "x"}`, want: "is not LOW, MODERATE or HIGH", keep: []string{"no"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, b := overrideEngine(t, tt.decision, tt.override)
			d := e.Admission(context.Background(), input(t, templateAgent()))
			if d.Outcome != engine.OutcomeDeny || d.Override != nil || d.RequiredApprovals != nil {
				t.Fatalf("decision = %+v, want a deny without override or approvals", d)
			}
			if d.BundleVersion != b.Version() {
				t.Errorf("bundle version = %q, want %q", d.BundleVersion, b.Version())
			}
			if len(d.Reasons) != len(tt.keep)+1 || !slices.Equal(d.Reasons[:len(tt.keep)], tt.keep) {
				t.Fatalf("reasons = %q, want %q and the override's", d.Reasons, tt.keep)
			}
			last := d.Reasons[len(d.Reasons)-1]
			if !strings.HasPrefix(last, "policy rule "+engine.OverrideRule+" is malformed: ") || !strings.Contains(last, tt.want) {
				t.Errorf("reason = %q, want it to name %s and say %q", last, engine.OverrideRule, tt.want)
			}
		})
	}
}

func TestParseOverride(t *testing.T) {
	o, err := engine.ParseOverride(map[string]any{"tier": "high", "reason": "pays invoices"})
	if err != nil || *o != (engine.Override{Tier: "RISK_TIER_HIGH", Reason: "pays invoices"}) {
		t.Fatalf("ParseOverride = %+v, %v", o, err)
	}
	for _, v := range []any{nil, []any{"HIGH"}, true, 1.5, map[string]any{"tier": "HIGH", "reason": "a\x00b"}} {
		if o, err := engine.ParseOverride(v); err == nil {
			t.Errorf("ParseOverride(%#v) = %+v, want an error", v, o)
		}
	}
}
