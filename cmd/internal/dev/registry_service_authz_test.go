package dev_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	issuerapp "github.com/agentid/agentid/services/issuer/app"
	lifecycleapp "github.com/agentid/agentid/services/lifecycle/app"
	monitorapp "github.com/agentid/agentid/services/monitor/app"
	policyapp "github.com/agentid/agentid/services/policy/app"
	registryapp "github.com/agentid/agentid/services/registry/app"
)

// callers of the authorization probe, by bearer token.
var callers = map[string]*authn.Claims{
	"registry": {Subject: "registry-service", ClientID: "registry-service", Tenant: authn.SystemTenant, Roles: []string{"registry-service"}},
	"platform": {Subject: "bootstrap-admin", ClientID: "bootstrap-admin", Tenant: authn.SystemTenant, Roles: []string{"platform-admin"}},
}

// serveAll registers every service `agentid dev` serves on one gRPC server, as dev.Run does, over an
// embedded NATS server, and returns a connection to it.
func serveAll(t *testing.T) (*grpc.Server, *grpc.ClientConn) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	js := testkit.StartNATS(t).JetStream(t)
	store := func(svc string) *eventstore.Store {
		return eventstore.New(js, eventstore.WithSource("agentid/"+svc))
	}
	if err := store("dev").EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: quiet, Verifier: testkit.StaticVerifier(callers)})
	registry, err := registryapp.New(registryapp.Config{Checkpoints: registryapp.CheckpointsOff}, registryapp.Deps{Store: store("registry"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = registry.Close() })
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	issuer, err := issuerapp.New(issuerapp.Config{PublicURL: "http://127.0.0.1:1", KEK: kek},
		issuerapp.Deps{Store: store("issuer"), Logger: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := policyapp.New(policyapp.Config{}, policyapp.Deps{Store: store("policy"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	monitor, err := monitorapp.New(monitorapp.Config{}, monitorapp.Deps{Store: store("monitor"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = monitor.Close() })
	lifecycle, err := lifecycleapp.New(lifecycleapp.Config{TemporalHostPort: "127.0.0.1:1", RegistryAddr: "127.0.0.1:1",
		IssuerAddr: "127.0.0.1:1", PolicyAddr: "127.0.0.1:1", IssuerURL: "http://127.0.0.1:1"},
		lifecycleapp.Deps{Store: store("lifecycle"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	registry.RegisterGRPC(srv)
	issuer.RegisterGRPC(srv)
	policy.RegisterGRPC(srv)
	monitor.RegisterGRPC(srv)
	lifecycle.RegisterGRPC(srv)
	return srv, testkit.ServeGRPC(t, srv)
}

// templates are the requests (protojson; {T} the tenant, {A} an agent id) of the methods that
// validate more than the tenant before they authorize: a probe must pass that validation to reach
// the authorization.
var templates = map[string]string{
	"/agentid.registry.v1.RegistryService/GetTenant":   `{"name":"tenants/{T}"}`,
	"/agentid.registry.v1.RegistryService/UpdateAgent": `{"agent":{"name":"tenants/{T}/agents/{A}"}}`,
	"/agentid.issuer.v1.IssuerService/GetClient":       `{"name":"tenants/{T}/clients/probe-client"}`,
	"/agentid.issuer.v1.IssuerService/DisableClient":   `{"name":"tenants/{T}/clients/probe-client"}`,
	"/agentid.issuer.v1.IssuerService/CheckClient":     `{"name":"tenants/{T}/clients/probe-client"}`,
	"/agentid.issuer.v1.IssuerService/AddClientKey":    `{"name":"tenants/{T}/clients/probe-client"}`,
	"/agentid.issuer.v1.IssuerService/RemoveClientKey": `{"name":"tenants/{T}/clients/probe-client"}`,
	"/agentid.issuer.v1.IssuerService/IssueApprovalToken": `{"agent":"tenants/{T}/agents/{A}","step":"owner",` +
		`"decision":"APPROVAL_TOKEN_DECISION_APPROVE","workflow_run_id":"probe-run"}`,
	"/agentid.monitor.v1.MonitorService/GetAlert":      `{"name":"tenants/{T}/alerts/probe-alert"}`,
	"/agentid.monitor.v1.MonitorService/GetAgentUsage": `{"agent":"tenants/{T}/agents/{A}","start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-02T00:00:00Z"}`,
}

// probe builds a request of method md naming tenant: its template, else every top-level tenant,
// parent, name and agent field set to the tenant or a well-formed resource of it.
func probe(t *testing.T, full string, md protoreflect.MethodDescriptor, tenant string) *dynamicpb.Message {
	t.Helper()
	m := dynamicpb.NewMessage(md.Input())
	if tmpl, ok := templates[full]; ok {
		js := strings.NewReplacer("{T}", tenant, "{A}", names.DeriveAgentID(tenant, "probe")).Replace(tmpl)
		if err := protojson.Unmarshal([]byte(js), m); err != nil {
			t.Fatalf("%s template: %v", full, err)
		}
		return m
	}
	fields := md.Input().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Kind() != protoreflect.StringKind || f.Cardinality() == protoreflect.Repeated {
			continue
		}
		switch f.Name() {
		case "tenant":
			m.Set(f, protoreflect.ValueOfString(tenant))
		case "parent":
			m.Set(f, protoreflect.ValueOfString("tenants/"+tenant))
		case "name", "agent":
			m.Set(f, protoreflect.ValueOfString("tenants/"+tenant+"/agents/"+names.DeriveAgentID(tenant, "probe")))
		}
	}
	return m
}

// call invokes md with req as token, unary or streaming, and returns the status of the first answer.
func call(ctx context.Context, conn *grpc.ClientConn, service string, md protoreflect.MethodDescriptor, req proto.Message, token string) *status.Status {
	ctx = testkit.WithBearer(ctx, token)
	method := "/" + service + "/" + string(md.Name())
	resp := dynamicpb.NewMessage(md.Output())
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return status.Convert(conn.Invoke(ctx, method, req, resp))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return status.Convert(err)
	}
	if err := s.SendMsg(req); err != nil {
		return status.Convert(err)
	}
	_ = s.CloseSend()
	return status.Convert(s.RecvMsg(resp))
}

// reason is the ErrorInfo reason of st.
func reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// refusals are the reasons of PermissionDenied that refuse a caller for who it is.
var refusals = []string{"MISSING_ROLE", "PLATFORM_ADMIN_REQUIRED", "APPROVER_NOT_HUMAN"}

// The registry's service identity may call PolicyService.EvaluateAdmission and nothing else: every
// other RPC of every service `agentid dev` serves refuses it, in a tenant and in tenant "system".
func TestRegistryServiceMayOnlyEvaluateAdmission(t *testing.T) {
	srv, conn := serveAll(t)
	evaluate := policyv1.PolicyService_EvaluateAdmission_FullMethodName
	var methods []string
	for service, info := range srv.GetServiceInfo() {
		if strings.HasPrefix(service, "grpc.") {
			continue // health and reflection
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
		if err != nil {
			t.Fatalf("service %s: %v", service, err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for _, m := range info.Methods {
			md := sd.Methods().ByName(protoreflect.Name(m.Name))
			if md == nil {
				t.Fatalf("%s/%s: no descriptor", service, m.Name)
			}
			full := "/" + service + "/" + m.Name
			methods = append(methods, full)
			for _, tenant := range []string{"default", authn.SystemTenant} {
				req := probe(t, full, md, tenant)
				if full == evaluate {
					continue // below, with a request that can be admitted
				}
				st := call(t.Context(), conn, service, md, req, "registry")
				refused := (st.Code() == codes.PermissionDenied && slices.Contains(refusals, reason(st))) ||
					(st.Code() == codes.NotFound && reason(st) == "TENANT_NOT_FOUND")
				if !refused {
					t.Errorf("%s in tenant %s: %s %s %q, want PermissionDenied MISSING_ROLE or NotFound TENANT_NOT_FOUND",
						full, tenant, st.Code(), reason(st), st.Message())
				}
			}
		}
	}
	sort.Strings(methods)
	if !slices.Contains(methods, evaluate) || len(methods) < 50 {
		t.Fatalf("probed %d methods %v, want every RPC of every service including %s", len(methods), methods, evaluate)
	}

	policy := policyv1.NewPolicyServiceClient(conn)
	agent := &registryv1.Agent{Name: "tenants/default/agents/faq", AgentId: "faq", Tenant: "default", Owner: "team:support",
		Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL, DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		RiskTier: registryv1.RiskTier_RISK_TIER_LOW, Scopes: []string{"kb.read"}}
	b, err := protojson.Marshal(agent)
	if err != nil {
		t.Fatal(err)
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		t.Fatal(err)
	}
	resp, err := policy.EvaluateAdmission(testkit.WithBearer(t.Context(), "registry"),
		&policyv1.EvaluateAdmissionRequest{Tenant: "default", Agent: s, RequestId: "registry-update:probe-1"}) // the registry records under its own prefix only
	if err != nil {
		t.Fatalf("EvaluateAdmission as the registry: %v", err)
	}
	if resp.GetDecision().GetOutcome() != policyv1.Outcome_OUTCOME_ALLOW {
		t.Fatalf("EvaluateAdmission as the registry: %v, want the low-risk agent allowed", resp)
	}
	// The role grants nothing in tenant "system" itself.
	agent.Name, agent.Tenant = "tenants/system/agents/faq", authn.SystemTenant
	if b, err = protojson.Marshal(agent); err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, s); err != nil {
		t.Fatal(err)
	}
	_, err = policy.EvaluateAdmission(testkit.WithBearer(t.Context(), "registry"),
		&policyv1.EvaluateAdmissionRequest{Tenant: authn.SystemTenant, Agent: s, RequestId: "probe-2"})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || reason(st) != "MISSING_ROLE" {
		t.Fatalf("EvaluateAdmission in tenant system as the registry: %v, want PermissionDenied MISSING_ROLE", err)
	}
}
