package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/app"
)

// quiet keeps test output to failures.
var quiet = slog.New(slog.DiscardHandler)

var fixedNow = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// principals are the callers of the tests, by bearer token.
var principals = map[string]*authn.Claims{
	"lifecycle":      {Subject: "lifecycle-worker", ClientID: "lifecycle-worker", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
	"acme-admin":     {Subject: "alice@acme.example", Tenant: "acme", Roles: []string{"tenant-admin"}},
	"acme-auditor":   {Subject: "bob@acme.example", Tenant: "acme", Roles: []string{"auditor"}},
	"globex-admin":   {Subject: "carol@globex.example", Tenant: "globex", Roles: []string{"tenant-admin"}},
	"acme-plat-ish":  {Subject: "dave@acme.example", Tenant: "acme", Roles: []string{"platform-admin"}},
	"worker":         {Subject: "lifecycle-worker", ClientID: "lifecycle-worker", Tenant: authn.SystemTenant, Roles: []string{"lifecycle-worker"}},
	"acme-worker":    {Subject: "fake-worker", ClientID: "fake-worker", Tenant: "acme", Roles: []string{"lifecycle-worker"}},
	"registry":       {Subject: "registry-service", ClientID: "registry-service", Tenant: authn.SystemTenant, Roles: []string{"registry-service"}},
	"acme-registry":  {Subject: "fake-registry", ClientID: "fake-registry", Tenant: "acme", Roles: []string{"registry-service"}},
	"acme-delegated": {Subject: "erin@acme.example", Tenant: "acme", Roles: []string{"tenant-admin"}, Act: map[string]any{"sub": "ops-agent"}},
	// A platform-admin token of the system tenant used on someone's behalf: not the platform acting.
	"system-delegated": {Subject: "frank@acme.example", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}, Act: map[string]any{"sub": "ops-agent"}},
}

type env struct {
	client policyv1.PolicyServiceClient
	js     jetstream.JetStream
	app    *app.App
}

// start runs the policy service over bufconn on an embedded NATS; withStreams false leaves
// JetStream without streams, so every publish fails.
func start(t *testing.T, cfg app.Config, withStreams bool) *env {
	t.Helper()
	return startOn(t, testkit.StartNATS(t), cfg, withStreams)
}

// startOn is start on a given NATS server, so that several policy services can share it.
func startOn(t *testing.T, n *testkit.NATS, cfg app.Config, withStreams bool) *env {
	t.Helper()
	js := n.JetStream(t)
	store := eventstore.New(js, eventstore.WithSource("agentid/policy"))
	if withStreams {
		if err := store.EnsureStreams(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	a, err := app.New(cfg, app.Deps{Store: store, Logger: quiet, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "policy" || a.Tasks() != nil {
		t.Errorf("Name() = %q, Tasks() = %v", a.Name(), a.Tasks())
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Verifier: testkit.StaticVerifier(principals)})
	a.RegisterGRPC(srv)
	conn := testkit.ServeGRPC(t, srv)
	return &env{client: policyv1.NewPolicyServiceClient(conn), js: js, app: a}
}

func agentStruct(t *testing.T, a *registryv1.Agent) *structpb.Struct {
	t.Helper()
	b, err := protojson.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func lowRiskAgent() *registryv1.Agent {
	return &registryv1.Agent{
		Name: "tenants/acme/agents/faq", AgentId: "faq", Tenant: "acme", Owner: "team:support",
		Environment:     registryv1.Environment_ENVIRONMENT_DEV,
		Autonomy:        registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		TrustBoundary:   registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier:        registryv1.RiskTier_RISK_TIER_LOW,
		Scopes:          []string{"kb.read"},
	}
}

func TestEvaluateAdmissionAuthorization(t *testing.T) {
	e := start(t, app.Config{}, true)
	n := 0
	valid := func() *policyv1.EvaluateAdmissionRequest { // a new request id each time: every OK call decides anew
		n++
		return &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, lowRiskAgent()), RequestId: fmt.Sprintf("req-%d", n)}
	}
	withID := func(prefix string) func() *policyv1.EvaluateAdmissionRequest { // a request id of a service's own
		return func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.RequestId = prefix + r.RequestId
			return r
		}
	}
	tests := []struct {
		name       string
		token      string
		req        func() *policyv1.EvaluateAdmissionRequest
		wantCode   codes.Code
		wantField  string
		wantRecord bool // recorded on POLICY under the request id, not a dry run
	}{
		{name: "lifecycle worker (platform-admin)", token: "lifecycle", req: valid, wantCode: codes.OK, wantRecord: true},
		{name: "tenant-admin of the tenant (dry run)", token: "acme-admin", req: valid, wantCode: codes.OK},
		{name: "delegated tenant-admin (dry run)", token: "acme-delegated", req: valid, wantCode: codes.OK},
		{name: "delegated platform-admin of system (dry run)", token: "system-delegated", req: valid, wantCode: codes.OK},
		{name: "auditor of the tenant (dry run, never recorded)", token: "acme-auditor", req: valid, wantCode: codes.OK},
		{name: "lifecycle worker (lifecycle-worker role)", token: "worker", req: withID("provision/acme/"), wantCode: codes.OK, wantRecord: true},
		// A service records under its own request ids only: a leaked credential cannot plant the
		// decision another service's (predictable) request id will find.
		{name: "lifecycle worker, another id", token: "worker", req: valid, wantCode: codes.InvalidArgument, wantField: "request_id"},
		{name: "lifecycle worker, another tenant's provisioning id", token: "worker", req: withID("provision/globex/"), wantCode: codes.InvalidArgument, wantField: "request_id"},
		{name: "lifecycle worker, a registry id", token: "worker", req: withID("registry-update:"), wantCode: codes.InvalidArgument, wantField: "request_id"},
		{name: "lifecycle-worker role outside system grants nothing", token: "acme-worker", req: valid, wantCode: codes.PermissionDenied},
		{name: "registry (registry-service role)", token: "registry", req: withID("registry-update:"), wantCode: codes.OK, wantRecord: true},
		{name: "registry, a provisioning id", token: "registry", req: withID("provision/acme/"), wantCode: codes.InvalidArgument, wantField: "request_id"},
		{name: "registry, another id", token: "registry", req: valid, wantCode: codes.InvalidArgument, wantField: "request_id"},
		{name: "registry-service role outside system grants nothing", token: "acme-registry", req: valid, wantCode: codes.PermissionDenied},
		{name: "platform-admin role outside system grants nothing", token: "acme-plat-ish", req: valid, wantCode: codes.PermissionDenied},
		{name: "tenant-admin of another tenant", token: "globex-admin", req: valid, wantCode: codes.NotFound},
		{name: "no token", token: "", req: valid, wantCode: codes.Unauthenticated},
		{name: "bad token", token: "forged", req: valid, wantCode: codes.Unauthenticated},
		{name: "missing tenant", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "tenant", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Tenant = ""
			return r
		}},
		{name: "malformed tenant", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "tenant", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Tenant = "Acme Corp"
			return r
		}},
		{name: "missing agent", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "agent", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Agent = nil
			return r
		}},
		{name: "agent of the wrong shape", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "agent", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Agent.Fields["environment"] = structpb.NewStringValue("ENVIRONMENT_MARS")
			return r
		}},
		{name: "agent with an unknown field", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "agent", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Agent.Fields["riskTeir"] = structpb.NewStringValue("RISK_TIER_LOW")
			return r
		}},
		{name: "agent of another tenant", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "agent.tenant", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Agent.Fields["tenant"] = structpb.NewStringValue("globex")
			return r
		}},
		{name: "agent name outside the tenant", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "agent.name", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.Agent.Fields["name"] = structpb.NewStringValue("tenants/globex/agents/faq")
			return r
		}},
		{name: "request id too long", token: "lifecycle", wantCode: codes.InvalidArgument, wantField: "request_id", req: func() *policyv1.EvaluateAdmissionRequest {
			r := valid()
			r.RequestId = strings.Repeat("x", 129)
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry)
			beforeRecords := testkit.StreamMessages(t, e.js, eventstore.StreamPolicy)
			resp, err := e.client.EvaluateAdmission(testkit.WithBearer(t.Context(), tt.token), tt.req())
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %s, want %s (err %v)", got, tt.wantCode, err)
			}
			after := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry)
			if records := testkit.StreamMessages(t, e.js, eventstore.StreamPolicy) - beforeRecords; tt.wantRecord != (records == 1) || records > 1 {
				t.Errorf("code %s recorded %d decisions on POLICY, want recorded %v", tt.wantCode, records, tt.wantRecord)
			}
			if tt.wantCode != codes.OK {
				if tt.wantField != "" {
					if f := errs.FromStatus(err).Field; f != tt.wantField {
						t.Errorf("field = %q, want %q", f, tt.wantField)
					}
				}
				if after != before {
					t.Errorf("a failed call recorded %d decisions", after-before)
				}
				return
			}
			if got := resp.GetDecision().GetOutcome(); got != policyv1.Outcome_OUTCOME_ALLOW {
				t.Errorf("outcome = %s, want ALLOW", got)
			}
			if after != before+1 {
				t.Errorf("recorded %d decisions, want 1", after-before)
			}
		})
	}
}

func TestEvaluateAdmissionRecordsTheDecision(t *testing.T) {
	e := start(t, app.Config{}, true)
	agent := lowRiskAgent()
	agent.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH
	agent.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
	ctx := grpcxRequestID(testkit.WithBearer(t.Context(), "lifecycle"), "corr-42")
	resp, err := e.client.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{
		Tenant: "acme", Agent: agentStruct(t, agent), RequestId: "provision/acme/faq",
	})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDecision()
	if d.GetOutcome() != policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL {
		t.Fatalf("outcome = %s", d.GetOutcome())
	}
	if want := []string{"owner", "security", "compliance"}; !slices.Equal(d.GetRequiredApprovals(), want) {
		t.Errorf("required approvals = %q, want %q", d.GetRequiredApprovals(), want)
	}
	if d.GetBundleVersion() != e.app.BundleVersion() || !strings.HasPrefix(d.GetBundleVersion(), "sha256:") {
		t.Errorf("bundle version = %q, want %q", d.GetBundleVersion(), e.app.BundleVersion())
	}
	if len(d.GetDecisionId()) != 36 || d.GetDecisionId()[14] != '7' {
		t.Errorf("decision id %q is not a UUIDv7", d.GetDecisionId())
	}

	s, err := e.js.Stream(t.Context(), eventstore.StreamTelemetry)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), "telemetry.acme.policy.decided")
	if err != nil {
		t.Fatalf("no decision on telemetry.acme.policy.decided: %v", err)
	}
	ev, err := eventstore.EventFromRaw(eventstore.StreamTelemetry, msg.Sequence, msg.Subject, msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "policy.decided" || ev.Source != "agentid/policy" || ev.Subject != "tenants/acme/agents/faq" {
		t.Errorf("envelope type/source/subject = %q/%q/%q", ev.Type, ev.Source, ev.Subject)
	}
	wantMD := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}, CorrelationID: "corr-42"}
	if ev.Metadata != wantMD {
		t.Errorf("metadata = %+v, want %+v", ev.Metadata, wantMD)
	}
	rec, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](ev)
	if err != nil {
		t.Fatal(err)
	}
	if rec.GetTenant() != "acme" || rec.GetDecisionPoint() != "admission" || rec.GetSubject() != "tenants/acme/agents/faq" || rec.GetRequestId() != "provision/acme/faq" {
		t.Errorf("record = %v", rec)
	}
	if !proto.Equal(rec.GetDecision(), d) {
		t.Errorf("recorded decision %v, answered %v", rec.GetDecision(), d)
	}
	in := rec.GetInput().AsMap()
	if in["now"] != fixedNow.Format(time.RFC3339Nano) || in["tenant"] != "acme" {
		t.Errorf("input now/tenant = %v/%v", in["now"], in["tenant"])
	}
	if a, _ := in["agent"].(map[string]any); a["riskTier"] != "RISK_TIER_HIGH" || a["dataSensitivity"] != "DATA_SENSITIVITY_PII" {
		t.Errorf("input agent = %v, want enum names", in["agent"])
	}
}

// grpcxRequestID sends id as the call's request id.
func grpcxRequestID(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, grpcx.RequestIDHeader, id)
}

func TestPublishFailureDoesNotChangeTheAnswer(t *testing.T) {
	e := start(t, app.Config{}, false)
	for _, tt := range []struct {
		name  string
		agent *registryv1.Agent
		want  policyv1.Outcome
	}{
		{name: "allow", agent: lowRiskAgent(), want: policyv1.Outcome_OUTCOME_ALLOW},
		{name: "deny", agent: func() *registryv1.Agent { a := lowRiskAgent(); a.Scopes = []string{"kb.admin"}; return a }(), want: policyv1.Outcome_OUTCOME_DENY},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testkit.WithBearer(t.Context(), "acme-admin"), 20*time.Second)
			defer cancel()
			resp, err := e.client.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, tt.agent)})
			if err != nil {
				t.Fatalf("publish failure turned into an error: %v", err)
			}
			if got := resp.GetDecision().GetOutcome(); got != tt.want {
				t.Errorf("outcome = %s, want %s", got, tt.want)
			}
		})
	}
	if n := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry); n != 0 {
		t.Errorf("telemetry holds %d messages without a stream", n)
	}
}

func TestBundleDirFailsClosed(t *testing.T) {
	dir := t.TempDir()
	// Compiles, but produces the wrong shape: a bare string instead of a decision object.
	if err := os.WriteFile(filepath.Join(dir, "admission.rego"), []byte("package agentid.admission\n\ndecision := \"allow\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := start(t, app.Config{BundleDir: dir}, true)
	resp, err := e.client.EvaluateAdmission(testkit.WithBearer(t.Context(), "lifecycle"), &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, lowRiskAgent())})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDecision()
	if d.GetOutcome() != policyv1.Outcome_OUTCOME_DENY || !slices.Equal(d.GetReasons(), []string{"policy evaluation failed"}) || len(d.GetRequiredApprovals()) != 0 {
		t.Errorf("decision = %v, want a deny with reason \"policy evaluation failed\"", d)
	}
	if d.GetDecisionId() == "" || d.GetBundleVersion() != e.app.BundleVersion() {
		t.Errorf("a failed evaluation is still a recorded decision: id %q, version %q", d.GetDecisionId(), d.GetBundleVersion())
	}
	if n := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry); n != 1 {
		t.Errorf("recorded %d decisions, want 1", n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	store := eventstore.New(js)
	syntaxErr := t.TempDir()
	if err := os.WriteFile(filepath.Join(syntaxErr, "admission.rego"), []byte("package agentid.admission\n\ndecision := {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "admission.rego")
	if err := os.WriteFile(file, []byte("package agentid.admission\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  app.Config
		deps app.Deps
	}{
		{name: "no store", cfg: app.Config{}, deps: app.Deps{}},
		{name: "missing bundle dir", cfg: app.Config{BundleDir: filepath.Join(t.TempDir(), "nope")}, deps: app.Deps{Store: store}},
		{name: "bundle dir is a file", cfg: app.Config{BundleDir: file}, deps: app.Deps{Store: store}},
		{name: "bundle does not compile", cfg: app.Config{BundleDir: syntaxErr}, deps: app.Deps{Store: store}},
		{name: "empty bundle dir", cfg: app.Config{BundleDir: t.TempDir()}, deps: app.Deps{Store: store}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := app.New(tt.cfg, tt.deps); err == nil {
				t.Fatalf("New accepted the config (bundle %s)", a.BundleVersion())
			}
		})
	}
}
