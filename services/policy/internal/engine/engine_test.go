package engine_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/bundle"
	"github.com/agentid/agentid/services/policy/internal/engine"
)

var now = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// templateAgent fits the pre-approved template: a read-only FAQ bot in dev.
func templateAgent() *registryv1.Agent {
	return &registryv1.Agent{
		Name:            "tenants/acme/agents/faq",
		AgentId:         "faq",
		Tenant:          "acme",
		DisplayName:     "FAQ bot",
		Owner:           "team:support",
		Purpose:         "answers questions from the knowledge base",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		IdentityModel:   registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier:        registryv1.RiskTier_RISK_TIER_LOW,
		Scopes:          []string{"kb.read", "ticket.search.open"},
		State:           registryv1.AgentState_AGENT_STATE_PENDING,
		ExpireTime:      timestamppb.New(now.Add(30 * 24 * time.Hour)),
	}
}

func with(mutate func(a *registryv1.Agent)) *registryv1.Agent {
	a := templateAgent()
	mutate(a)
	return a
}

// input renders the agent the way the service does: protojson with enum names.
func input(t *testing.T, a *registryv1.Agent) map[string]any {
	t.Helper()
	b, err := protojson.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return map[string]any{"tenant": "acme", "agent": m, "now": now.Format(time.RFC3339Nano)}
}

func defaultEngine(t *testing.T) *engine.Engine {
	t.Helper()
	b, err := engine.LoadFS(bundle.FS)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAdmissionDecisions(t *testing.T) {
	e := defaultEngine(t)
	const (
		allow   = engine.OutcomeAllow
		approve = engine.OutcomeRequireApproval
		deny    = engine.OutcomeDeny
	)
	tests := []struct {
		name          string
		agent         *registryv1.Agent
		want          engine.Outcome
		wantApprovals []string
		wantReason    string // a reason that must be among the decision's reasons
		wantReasons   int    // exact number of reasons, when > 0
	}{
		{name: "template agent is allowed", agent: templateAgent(), want: allow, wantReasons: 1},
		{name: "test environment is allowed", agent: with(func(a *registryv1.Agent) { a.Environment = registryv1.Environment_ENVIRONMENT_TEST }), want: allow},
		{name: "no expiry is allowed", agent: with(func(a *registryv1.Agent) { a.ExpireTime = nil }), want: allow},
		{name: "no scopes is allowed", agent: with(func(a *registryv1.Agent) { a.Scopes = nil }), want: allow},
		{name: "public data is allowed", agent: with(func(a *registryv1.Agent) { a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PUBLIC }), want: allow},
		{name: "every read-like action is allowed", agent: with(func(a *registryv1.Agent) {
			a.Scopes = []string{"a.read", "b.list", "c.get", "d.search", "e.query", "f.view.all-columns"}
		}), want: allow},
		{name: "expiry exactly 90 days away is allowed", agent: with(func(a *registryv1.Agent) {
			a.ExpireTime = timestamppb.New(now.Add(90 * 24 * time.Hour))
		}), want: allow},
		{name: "expiry 90 days and a second away needs the owner", agent: with(func(a *registryv1.Agent) {
			a.ExpireTime = timestamppb.New(now.Add(90*24*time.Hour + time.Second))
		}), want: approve, wantApprovals: []string{"owner"}, wantReason: "not pre-approved: expire_time is more than 90 days away"},
		{name: "write scope in dev needs the owner", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"ticket.create"} }),
			want: approve, wantApprovals: []string{"owner"}, wantReason: `not pre-approved: scope "ticket.create" is not read-only`},
		{name: "scope without an action is not read-only", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"read"} }),
			want: approve, wantApprovals: []string{"owner"}},
		{name: "moderate risk needs the owner", agent: with(func(a *registryv1.Agent) { a.RiskTier = registryv1.RiskTier_RISK_TIER_MODERATE }),
			want: approve, wantApprovals: []string{"owner"}, wantReason: "not pre-approved: risk tier RISK_TIER_MODERATE is not RISK_TIER_LOW"},
		{name: "staging is not pre-approved", agent: with(func(a *registryv1.Agent) { a.Environment = registryv1.Environment_ENVIRONMENT_STAGING }),
			want: approve, wantApprovals: []string{"owner"}},
		{name: "high risk needs owner and security", agent: with(func(a *registryv1.Agent) { a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH }),
			want: approve, wantApprovals: []string{"owner", "security"}, wantReason: "risk tier RISK_TIER_HIGH requires security approval"},
		{name: "unclassified risk is treated as high", agent: with(func(a *registryv1.Agent) { a.RiskTier = registryv1.RiskTier_RISK_TIER_UNSPECIFIED }),
			want: approve, wantApprovals: []string{"owner", "security"}},
		{name: "production read needs the owner", agent: with(func(a *registryv1.Agent) {
			a.Environment = registryv1.Environment_ENVIRONMENT_PROD
			a.RiskTier = registryv1.RiskTier_RISK_TIER_MODERATE
		}), want: approve, wantApprovals: []string{"owner"}},
		{name: "production write needs security", agent: with(func(a *registryv1.Agent) {
			a.Environment = registryv1.Environment_ENVIRONMENT_PROD
			a.RiskTier = registryv1.RiskTier_RISK_TIER_MODERATE
			a.Scopes = []string{"kb.read", "kb.write"}
		}), want: approve, wantApprovals: []string{"owner", "security"}, wantReason: "production write access requires security approval"},
		{name: "PII needs compliance", agent: with(func(a *registryv1.Agent) {
			a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
			a.RiskTier = registryv1.RiskTier_RISK_TIER_MODERATE
		}), want: approve, wantApprovals: []string{"owner", "compliance"}, wantReason: "data sensitivity DATA_SENSITIVITY_PII requires compliance approval"},
		{name: "high-risk payment agent needs all three in order", agent: with(func(a *registryv1.Agent) {
			a.Environment = registryv1.Environment_ENVIRONMENT_PROD
			a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PCI
			a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH
			a.Scopes = []string{"payment.initiate.limited"}
		}), want: approve, wantApprovals: []string{"owner", "security", "compliance"}},
		{name: "confidential data needs no compliance", agent: with(func(a *registryv1.Agent) {
			a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_CONFIDENTIAL
			a.RiskTier = registryv1.RiskTier_RISK_TIER_MODERATE
		}), want: approve, wantApprovals: []string{"owner"}},
		{name: "admin scope is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"kb.read", "kb.admin"} }),
			want: deny, wantReasons: 1, wantReason: `scope "kb.admin" grants admin-style access; agents get narrow resource.action scopes only`},
		{name: "superuser scope is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"db.superuser"} }), want: deny},
		{name: "root scope is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"root"} }), want: deny},
		{name: "wildcard scope is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"data.*"} }), want: deny},
		{name: "all qualifier is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"data.read.all"} }), want: deny},
		{name: "upper-case admin is denied", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"KB.Admin"} }), want: deny},
		{name: "admin as a substring is fine", agent: with(func(a *registryv1.Agent) { a.Scopes = []string{"administration.read"} }), want: allow},
		{name: "missing owner is denied", agent: with(func(a *registryv1.Agent) { a.Owner = "" }),
			want: deny, wantReason: "owner is missing: every agent needs an accountable owner"},
		{name: "autonomous public production PHI agent is denied", agent: with(func(a *registryv1.Agent) {
			a.Environment = registryv1.Environment_ENVIRONMENT_PROD
			a.Autonomy = registryv1.Autonomy_AUTONOMY_AUTONOMOUS
			a.TrustBoundary = registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC
			a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI
			a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH
		}), want: deny, wantReason: "an autonomous, public-facing production agent may not handle PHI data"},
		{name: "assistive public production PHI agent needs approvals", agent: with(func(a *registryv1.Agent) {
			a.Environment = registryv1.Environment_ENVIRONMENT_PROD
			a.TrustBoundary = registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC
			a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI
			a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH
		}), want: approve, wantApprovals: []string{"owner", "security", "compliance"}},
		{name: "admin scope deny wins over the template and lists every reason", agent: with(func(a *registryv1.Agent) {
			a.Owner = ""
			a.Scopes = []string{"kb.read", "kb.admin", "billing.root.read"}
		}), want: deny, wantReasons: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Admission(context.Background(), input(t, tt.agent))
			if d.Outcome != tt.want {
				t.Fatalf("outcome = %s, want %s (reasons %q)", d.Outcome, tt.want, d.Reasons)
			}
			if !slices.Equal(d.RequiredApprovals, tt.wantApprovals) {
				t.Errorf("required approvals = %q, want %q", d.RequiredApprovals, tt.wantApprovals)
			}
			if len(d.Reasons) == 0 {
				t.Error("no reasons")
			}
			if tt.wantReason != "" && !slices.Contains(d.Reasons, tt.wantReason) {
				t.Errorf("reasons = %q, want one to be %q", d.Reasons, tt.wantReason)
			}
			if tt.wantReasons > 0 && len(d.Reasons) != tt.wantReasons {
				t.Errorf("got %d reasons %q, want %d", len(d.Reasons), d.Reasons, tt.wantReasons)
			}
			if d.BundleVersion != e.BundleVersion() || !strings.HasPrefix(d.BundleVersion, "sha256:") {
				t.Errorf("bundle version = %q, want %q", d.BundleVersion, e.BundleVersion())
			}
		})
	}
}

// writeBundle writes files into a fresh directory and returns it.
func writeBundle(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestAdmissionFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		policy string
	}{
		{name: "decision is not an object", policy: `decision := "allow"`},
		{name: "decision is undefined", policy: `decision := {"outcome": "allow", "reasons": ["x"]} if input.never`},
		{name: "no decision rule", policy: `other := true`},
		{name: "unknown outcome", policy: `decision := {"outcome": "maybe", "reasons": ["x"], "required_approvals": []}`},
		{name: "outcome of the wrong type", policy: `decision := {"outcome": true, "reasons": ["x"], "required_approvals": []}`},
		{name: "reasons missing", policy: `decision := {"outcome": "allow", "required_approvals": []}`},
		{name: "reasons not a list of strings", policy: `decision := {"outcome": "allow", "reasons": [1], "required_approvals": []}`},
		{name: "approvals not a list", policy: `decision := {"outcome": "require_approval", "reasons": ["x"], "required_approvals": "owner"}`},
		{name: "require_approval without approvals", policy: `decision := {"outcome": "require_approval", "reasons": ["x"], "required_approvals": []}`},
		{name: "allow with approvals", policy: `decision := {"outcome": "allow", "reasons": ["x"], "required_approvals": ["owner"]}`},
		{name: "unknown key", policy: `decision := {"outcome": "allow", "reasons": ["x"], "required_approvals": [], "ttl": 5}`},
		{name: "conflicting values", policy: "decision := {\"outcome\": \"allow\", \"reasons\": [\"a\"]} if true\ndecision := {\"outcome\": \"deny\", \"reasons\": [\"b\"]} if true"},
		{name: "builtin error", policy: `decision := {"outcome": "allow", "reasons": [sprintf("%d", [1 / count(input.nothing)])]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeBundle(t, map[string]string{"admission.rego": "package agentid.admission\n\n" + tt.policy + "\n"})
			b, err := engine.LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.New(context.Background(), b, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("bundle should compile: %v", err)
			}
			d := e.Admission(context.Background(), input(t, templateAgent()))
			want := engine.Decision{Outcome: engine.OutcomeDeny, Reasons: []string{engine.EvaluationFailed}, BundleVersion: b.Version()}
			if d.Outcome != want.Outcome || !slices.Equal(d.Reasons, want.Reasons) || d.RequiredApprovals != nil || d.BundleVersion != want.BundleVersion {
				t.Errorf("decision = %+v, want %+v", d, want)
			}
		})
	}
}

func TestCustomBundleDecides(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"policies/admission.rego": `package agentid.admission

decision := {"outcome": "require_approval", "reasons": ["everything needs the owner"], "required_approvals": ["owner"]}
`,
		"policies/admission_test.rego": "package agentid.admission_test\n\ntest_nothing if true\n",
		"README.md":                    "not a module",
	})
	b, err := engine.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range b.Files() {
		names = append(names, f.Name)
	}
	if want := []string{"policies/admission.rego", "policies/admission_test.rego"}; !slices.Equal(names, want) {
		t.Errorf("files = %q, want %q", names, want)
	}
	e, err := engine.New(context.Background(), b, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	d := e.Admission(context.Background(), input(t, templateAgent()))
	if d.Outcome != engine.OutcomeRequireApproval || !slices.Equal(d.RequiredApprovals, []string{"owner"}) {
		t.Errorf("decision = %+v", d)
	}
}

func TestBundleRejectedAtStart(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
	}{
		{name: "syntax error", files: map[string]string{"a.rego": "package agentid.admission\n\ndecision := {\n"}},
		{name: "rego v0 syntax", files: map[string]string{"a.rego": "package agentid.admission\n\ndecision = {\"outcome\": \"allow\"} { true }\n"}},
		{name: "only tests", files: map[string]string{"a_test.rego": "package agentid.admission_test\n\ntest_x if true\n"}},
		{name: "no modules", files: map[string]string{"a.txt": "hello"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := engine.LoadDir(writeBundle(t, tt.files))
			if err == nil {
				_, err = engine.New(context.Background(), b, nil)
			}
			if err == nil {
				t.Fatal("bundle accepted, want an error")
			}
		})
	}
	if _, err := engine.LoadDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing dir accepted")
	}
}

func TestBundleVersion(t *testing.T) {
	files := func(src string) []engine.File {
		return []engine.File{{Name: "b.rego", Source: "package b\n"}, {Name: "a.rego", Source: src}}
	}
	version := func(fs []engine.File) string {
		b, err := engine.NewBundle(fs...)
		if err != nil {
			t.Fatal(err)
		}
		return b.Version()
	}
	v1 := version(files("package a\n"))
	reordered := files("package a\n")
	slices.Reverse(reordered)
	if v := version(reordered); v != v1 {
		t.Errorf("version depends on file order: %s vs %s", v, v1)
	}
	if v := version(files("package a\n\nx := 1\n")); v == v1 {
		t.Error("version did not change with the content")
	}
	renamed := []engine.File{{Name: "b.rego", Source: "package b\n"}, {Name: "c.rego", Source: "package a\n"}}
	if v := version(renamed); v == v1 {
		t.Error("version did not change with a file name")
	}
	if !strings.HasPrefix(v1, "sha256:") || len(v1) != len("sha256:")+64 {
		t.Errorf("version %q is not sha256:<64 hex>", v1)
	}
	if _, err := engine.NewBundle(engine.File{Name: "a.rego", Source: "package a\n"}, engine.File{Name: "a.rego", Source: "package a\n"}); err == nil {
		t.Error("duplicate file names accepted")
	}
}

func TestAdmissionIsSafeForConcurrentUse(t *testing.T) {
	e := defaultEngine(t)
	high := input(t, with(func(a *registryv1.Agent) { a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH }))
	low := input(t, templateAgent())
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Go(func() {
			in, want := low, engine.OutcomeAllow
			if i%2 == 0 {
				in, want = high, engine.OutcomeRequireApproval
			}
			if d := e.Admission(context.Background(), in); d.Outcome != want {
				errs <- string(d.Outcome) + " != " + string(want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}

// FuzzAdmission feeds arbitrary JSON agents to the default policy: whatever the input, the answer
// is one of the three outcomes with at least one reason, and approvals only with require_approval.
func FuzzAdmission(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"owner":"x","scopes":["a.read"],"riskTier":"RISK_TIER_LOW","environment":"ENVIRONMENT_DEV","dataSensitivity":"DATA_SENSITIVITY_PUBLIC"}`,
		`{"owner":"x","scopes":[1,null,{"a":"b"}],"expireTime":"not a time"}`,
		`{"owner":["x"],"scopes":"kb.admin","riskTier":7}`,
		`{"owner":"x","expireTime":"2030-01-01T00:00:00Z","scopes":["..","*"]}`,
	} {
		f.Add(seed)
	}
	b, err := engine.LoadFS(bundle.FS)
	if err != nil {
		f.Fatal(err)
	}
	e, err := engine.New(context.Background(), b, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, agentJSON string) {
		var agent map[string]any
		if json.Unmarshal([]byte(agentJSON), &agent) != nil {
			return
		}
		d := e.Admission(context.Background(), map[string]any{"tenant": "acme", "agent": agent, "now": now.Format(time.RFC3339Nano)})
		switch d.Outcome {
		case engine.OutcomeAllow, engine.OutcomeDeny:
			if len(d.RequiredApprovals) != 0 {
				t.Errorf("%s with approvals %q", d.Outcome, d.RequiredApprovals)
			}
		case engine.OutcomeRequireApproval:
			if len(d.RequiredApprovals) == 0 || d.RequiredApprovals[0] != "owner" {
				t.Errorf("require_approval with approvals %q", d.RequiredApprovals)
			}
		default:
			t.Fatalf("outcome %q", d.Outcome)
		}
		if len(d.Reasons) == 0 {
			t.Error("no reasons")
		}
	})
}
