package assetgraph_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/assetgraph"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Two P-256 keys: k1 is the agent's registered key (the issuer accepts it too), k2 only the
// issuer's client holds (drift the graph shows). The private halves exist only to prove they never
// leak into the output.
const (
	jwkK1     = `{"use":"sig","kty":"EC","kid":"k1","crv":"P-256","alg":"ES256","x":"T69iJmBU2drNI7AQzCpGa6gHrLjOwLEe6McIlai-HVM","y":"aVjbuBWttckOdtX4KavnoViY_AJ4hQgACPKzUkXQAiQ"}`
	jwkK1Priv = `{"use":"sig","kty":"EC","kid":"k1","crv":"P-256","alg":"ES256","x":"T69iJmBU2drNI7AQzCpGa6gHrLjOwLEe6McIlai-HVM","y":"aVjbuBWttckOdtX4KavnoViY_AJ4hQgACPKzUkXQAiQ","d":"vAAcsrNNF1Qp926rlJlEHDQ_cNKJ3TSsAt-4zsV3ItQ"}`
	tpK1      = "Yu9L0edMbZaEq9-sukxoC5AQ8tz_qzBf17KMK39l5M0"
	jwkK2     = `{"use":"sig","kty":"EC","kid":"k2","crv":"P-256","alg":"ES256","x":"2VhZ5d3bZkw70UhaHvBYoVXtcu1AmPRZRh6v2iUY9D0","y":"YU28aXS6wbAOxyatUKgDB3fYQKcJYWllFWMnjCsFheU"}`
	tpK2      = "TLNzLj6iSylwfSNRxNiiGGsq0m2qqZUnfL9H9Ri4vx8"
	privD1    = "vAAcsrNNF1Qp926rlJlEHDQ_cNKJ3TSsAt-4zsV3ItQ"
	pubX1     = "T69iJmBU2drNI7AQzCpGa6gHrLjOwLEe6McIlai-HVM"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const claimsBot = "tenants/acme/agents/agt_claims"

// realisticAgent is a production claims agent with two dependencies of each common kind.
func realisticAgent() *registryv1.Agent {
	return &registryv1.Agent{
		Name: claimsBot, AgentId: "agt_claims", Tenant: "acme", DisplayName: "Claims bot",
		Owner: "team:claims", Sponsor: "alice@corp.example", Purpose: "triages insurance claims",
		Environment: registryv1.Environment_ENVIRONMENT_PROD, Autonomy: registryv1.Autonomy_AUTONOMY_AUTONOMOUS,
		IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
		DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_PII, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH,
		State: registryv1.AgentState_AGENT_STATE_ACTIVE, CredentialType: registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP,
		Function: "automation", Scopes: []string{"claims.read", "claims.write"}, Roles: []string{"claims-processor"},
		PublicJwks: `{"keys":[` + jwkK1 + `]}`,
		Keys:       []*registryv1.AgentKey{{Kid: "k1", Thumbprint: tpK1, Algorithm: "ES256", AddTime: timestamppb.New(now.Add(-48 * time.Hour))}},
		ExpireTime: timestamppb.New(now.Add(90 * 24 * time.Hour)),
		Dependencies: []*registryv1.Dependency{
			{Kind: "webhook", Uri: "https://hooks.corp.example/claims/notify", Description: "tells adjusters"},
			{Kind: "Queue", Uri: "nats://nats.corp.example/claims.intake", Description: "incoming claims"},
			{Kind: "storage", Uri: "s3://claims-archive/agt_claims/", Description: "scanned documents"},
			{Kind: "queue", Uri: "nats://nats.corp.example/claims.intake", Description: "duplicate declaration"},
		},
	}
}

func realisticClient() *issuerv1.Client {
	return &issuerv1.Client{
		Name: "tenants/acme/clients/agt_claims", ClientId: "agt_claims", Tenant: "acme", Agent: claimsBot,
		PublicJwks: `{"keys":[` + jwkK1 + `,` + jwkK2 + `]}`, Scopes: []string{"claims.read", "claims.write"},
		Environment: "prod", TokenTtlSeconds: 600, State: issuerv1.ClientState_CLIENT_STATE_ACTIVE, DpopBound: true,
		Resources: []string{"https://claims.api.corp.example"},
	}
}

func realisticUsage() *monitorv1.GetAgentUsageResponse {
	seen := timestamppb.New(now.Add(-3 * time.Hour))
	return &monitorv1.GetAgentUsageResponse{
		LastActiveTime: seen, Events: 1234, CoverageStartTime: timestamppb.New(now.Add(-60 * 24 * time.Hour)),
		Scopes: []*monitorv1.UsageCount{{Value: "claims.read", Count: 1200, LastSeen: seen}, {Value: "payments.refund", Count: 2, LastSeen: seen}},
		Resources: []*monitorv1.UsageCount{
			{Value: "https://claims.api.corp.example/v1/claims", Count: 1200, LastSeen: seen},
			{Value: "https://payments.corp.example/refunds", Count: 2, LastSeen: seen},
		},
	}
}

// sources are in-memory sources; a non-nil error field is returned instead of the value.
type sources struct {
	agent     *registryv1.Agent
	agentErr  error
	client    *issuerv1.Client
	clientErr error
	usage     *monitorv1.GetAgentUsageResponse
	usageErr  error

	askedClient           string
	askedStart, askedEnd  time.Time
	askedUsageOf, askedAg string
}

func (s *sources) Agent(_ context.Context, name string) (*registryv1.Agent, error) {
	s.askedAg = name
	if s.agentErr != nil {
		return nil, s.agentErr
	}
	return proto.Clone(s.agent).(*registryv1.Agent), nil
}

func (s *sources) Client(_ context.Context, name string) (*issuerv1.Client, error) {
	s.askedClient = name
	return s.client, s.clientErr
}

func (s *sources) Usage(_ context.Context, agent string, start, end time.Time) (*monitorv1.GetAgentUsageResponse, error) {
	s.askedUsageOf, s.askedStart, s.askedEnd = agent, start, end
	return s.usage, s.usageErr
}

func builder(s *sources) assetgraph.Builder {
	return assetgraph.Builder{Agents: s, Clients: s, Usage: s, UsageWindow: 7 * 24 * time.Hour, Now: func() time.Time { return now }}
}

func TestGoldenOutputsOfARealisticAgent(t *testing.T) {
	s := &sources{agent: realisticAgent(), client: realisticClient(), usage: realisticUsage()}
	g, err := builder(s).Build(t.Context(), claimsBot)
	if err != nil {
		t.Fatal(err)
	}
	if s.askedClient != "tenants/acme/clients/agt_claims" || s.askedUsageOf != claimsBot ||
		!s.askedEnd.Equal(now) || !s.askedStart.Equal(now.Add(-7*24*time.Hour)) {
		t.Fatalf("asked client %q, usage of %q from %s to %s", s.askedClient, s.askedUsageOf, s.askedStart, s.askedEnd)
	}
	js, err := g.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		file string
		got  string
	}{
		{"claims-bot.json", string(js)},
		{"claims-bot.dot", g.DOT()},
		{"claims-bot.mmd", g.Mermaid()},
	} {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, []byte(tt.got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if tt.got != string(want) {
				t.Fatalf("%s differs from the golden file:\n%s", tt.file, tt.got)
			}
		})
	}

	// The same inputs in another order give the same graph (stable output); the duplicate
	// declaration is dropped first, as the first of two duplicates is the one kept.
	shuffled := realisticAgent()
	shuffled.Dependencies = shuffled.Dependencies[:3]
	slices.Reverse(shuffled.Dependencies)
	slices.Reverse(shuffled.Scopes)
	s2 := &sources{agent: shuffled, client: realisticClient(), usage: realisticUsage()}
	slices.Reverse(s2.client.Scopes)
	slices.Reverse(s2.usage.Resources)
	g2, err := builder(s2).Build(t.Context(), claimsBot)
	if err != nil {
		t.Fatal(err)
	}
	if js2, _ := g2.JSON(); string(js2) != string(js) {
		t.Fatalf("reordered inputs changed the JSON:\n%s", js2)
	}
}

func TestTheGraphSaysWhatTheRecordSays(t *testing.T) {
	s := &sources{agent: realisticAgent(), client: realisticClient(), usage: realisticUsage()}
	g, err := builder(s).Build(t.Context(), claimsBot)
	if err != nil {
		t.Fatal(err)
	}
	type edge struct{ from, kind, to string }
	var edges []edge
	for _, e := range g.Edges {
		edges = append(edges, edge{e.From, string(e.Kind), e.To})
	}
	agent := "agent:" + claimsBot
	for _, want := range []edge{
		{agent, "belongs_to", "tenant:acme"},
		{agent, "owned_by", "owner:team:claims"},
		{agent, "sponsored_by", "sponsor:alice@corp.example"},
		{agent, "has_client", "client:agt_claims"},
		{agent, "authenticates_with", "key:thumbprint:" + tpK1},
		{"client:agt_claims", "accepts_key", "key:thumbprint:" + tpK1},
		{"client:agt_claims", "accepts_key", "key:thumbprint:" + tpK2},
		{agent, "granted_scope", "scope:claims.write"},
		{"client:agt_claims", "allows_scope", "scope:claims.read"},
		{agent, "has_role", "role:claims-processor"},
		{"client:agt_claims", "audience", "resource:https://claims.api.corp.example"},
		{agent, "depends_on", "dependency:queue:nats://nats.corp.example/claims.intake"},
		{agent, "depends_on", "dependency:webhook:https://hooks.corp.example/claims/notify"},
		{agent, "depends_on", "dependency:storage:s3://claims-archive/agt_claims/"},
		{agent, "used_scope", "scope:payments.refund"},
		{agent, "accessed", "resource_seen:https://payments.corp.example/refunds"},
	} {
		if !slices.Contains(edges, want) {
			t.Errorf("no edge %v", want)
		}
	}
	if !slices.Equal(g.Sources, []string{"registry", "issuer", "monitor"}) || len(g.Notes) != 0 {
		t.Errorf("sources %v, notes %v", g.Sources, g.Notes)
	}
	if g.Usage == nil || g.Usage.Events != 1234 || g.Usage.StartTime != "2026-11-23T12:00:00Z" || g.Usage.CoverageStartTime != "2026-10-01T12:00:00Z" {
		t.Errorf("usage = %+v", g.Usage)
	}
	want := []assetgraph.Dependency{
		{Kind: "queue", URI: "nats://nats.corp.example/claims.intake", Description: "incoming claims"},
		{Kind: "storage", URI: "s3://claims-archive/agt_claims/", Description: "scanned documents"},
		{Kind: "webhook", URI: "https://hooks.corp.example/claims/notify", Description: "tells adjusters"},
	}
	if got := g.Dependencies(); !slices.Equal(got, want) {
		t.Errorf("Dependencies() = %v, want %v", got, want)
	}
	if got := assetgraph.FromAgent(realisticAgent()).Dependencies(); !slices.Equal(got, want) {
		t.Errorf("FromAgent(...).Dependencies() = %v, want %v", got, want)
	}
	if a, ok := g.Node(agent); !ok || a.Attrs["risk_tier"] != "high" || a.Attrs["environment"] != "prod" ||
		a.Attrs["credential_type"] != "private_key_jwt_dpop" || a.Attrs["orphaned"] != "" {
		t.Errorf("agent node = %+v", a)
	}
}

func TestHostileLabelsAreEscaped(t *testing.T) {
	tests := []struct {
		name  string
		value string
	}{
		{"quotes", `evil" shape=box label="pwned`},
		{"newline", "line one\nline two\r\n  }\ndigraph x {"},
		{"mermaid arrow", "a --> b"},
		{"closing bracket", `x"] --> n0["`},
		{"brackets and pipes", "]|) }} ]] --)"},
		{"markup", `<img src=x onerror=alert(1)> #quot; %%{init}%%`},
		{"backslash", `C:\path\"quoted\" \n`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := realisticAgent()
			a.DisplayName, a.Owner, a.Sponsor = tt.value, tt.value, tt.value+" (sponsor)"
			a.Scopes = []string{tt.value}
			a.Roles = []string{tt.value}
			a.Dependencies = []*registryv1.Dependency{{Kind: "queue", Uri: tt.value}, {Kind: tt.value, Uri: "nats://q/x"}}
			g := assetgraph.FromAgent(a)

			dot := g.DOT()
			lines := strings.Split(strings.TrimSuffix(dot, "\n"), "\n")
			if want := 5 + len(g.Nodes) + len(g.Edges); len(lines) != want {
				t.Fatalf("DOT has %d lines, want %d (a label broke a line):\n%s", len(lines), want, dot)
			}
			for _, l := range lines[4 : len(lines)-1] {
				if !dotStatement(l) {
					t.Fatalf("DOT statement %q: a label escaped its quotes", l)
				}
			}

			mm := g.Mermaid()
			lines = strings.Split(strings.TrimSuffix(mm, "\n"), "\n")
			if want := 1 + len(g.Nodes) + len(g.Edges); len(lines) != want {
				t.Fatalf("Mermaid has %d lines, want %d:\n%s", len(lines), want, mm)
			}
			for _, l := range lines[1:] {
				if strings.Count(l, `"`) != 2 || strings.Count(l, "-->") > 1 || strings.ContainsAny(between(l, `"`), "[](){}|<>\"`\n") {
					t.Fatalf("Mermaid line %q: a label is not escaped", l)
				}
			}

			js, err := g.JSON()
			if err != nil {
				t.Fatal(err)
			}
			var back assetgraph.Graph
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatal(err)
			}
			if n, _ := back.Node("owner:" + tt.value); n.Label != tt.value {
				t.Fatalf("JSON owner label %q, want %q as it is", n.Label, tt.value)
			}
		})
	}
}

// dotStatement reports whether l is one node or edge statement whose quoted strings are closed:
// outside quotes there is no quote, and the line ends with "];".
func dotStatement(l string) bool {
	in := false
	for i := 0; i < len(l); i++ {
		switch {
		case in && l[i] == '\\':
			i++
		case l[i] == '"':
			in = !in
		}
	}
	return !in && strings.HasSuffix(l, "];")
}

// between returns what lies between the first and the last sep of s.
func between(s, sep string) string {
	i, j := strings.Index(s, sep), strings.LastIndex(s, sep)
	if i < 0 || j <= i {
		return ""
	}
	return s[i+1 : j]
}

func TestNoSecretMaterial(t *testing.T) {
	a := realisticAgent()
	a.Keys = nil // keys come from public_jwks, which here (wrongly) holds a private key
	a.PublicJwks = `{"keys":[` + jwkK1Priv + `,{"kty":"oct","kid":"hmac","k":"c2VjcmV0LXN5bW1ldHJpYy1rZXktbWF0ZXJpYWw"}]}`
	a.Dependencies = []*registryv1.Dependency{
		{Kind: "queue", Uri: "amqp://svc:hunter2@mq.corp.example/claims"},
		{Kind: "storage", Uri: "https://blob.corp.example/c?sv=2024&sig=c2VjcmV0LXNpZw&se=2027"},
	}
	c := realisticClient()
	c.PublicJwks = `{"keys":[` + jwkK1Priv + `]}`
	c.Resources = []string{"https://api.corp.example/?access_token=tok-secret-1"}
	u := realisticUsage()
	u.Resources = append(u.Resources, &monitorv1.UsageCount{Value: "https://x.corp.example/p?api_key=key-secret-2", Count: 1})
	g, err := builder(&sources{agent: a, client: c, usage: u}).Build(t.Context(), claimsBot)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := g.JSON()
	for format, out := range map[string]string{"json": string(js), "dot": g.DOT(), "mermaid": g.Mermaid()} {
		for _, secret := range []string{privD1, pubX1, "c2VjcmV0LXN5bW1ldHJpYy1rZXktbWF0ZXJpYWw", "hunter2", "c2VjcmV0LXNpZw", "tok-secret-1", "key-secret-2"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output holds %q", format, secret)
			}
		}
	}
	if _, ok := g.Node("key:thumbprint:" + tpK1); !ok {
		t.Error("the key is not shown by its thumbprint")
	}
	if !slices.ContainsFunc(g.Notes, func(n string) bool { return strings.Contains(n, "key 1") && strings.Contains(n, "omitted") }) {
		t.Errorf("notes %v do not say the symmetric key was omitted", g.Notes)
	}
	deps := g.Dependencies()
	if len(deps) != 2 || deps[0].URI != "amqp://svc:REDACTED@mq.corp.example/claims" || !strings.Contains(deps[1].URI, "sig=REDACTED") || !strings.Contains(deps[1].URI, "sv=2024") {
		t.Errorf("dependencies %v: want the password and signature redacted, the rest kept", deps)
	}
}

func TestUnavailableSourcesDegradeToNotes(t *testing.T) {
	tests := []struct {
		name        string
		s           *sources
		nilClients  bool
		nilUsage    bool
		wantSources []string
		wantNotes   []string
	}{
		{"issuer refuses", &sources{clientErr: status.Error(codes.PermissionDenied, "GetClient needs tenant-admin"), usage: realisticUsage()},
			false, false, []string{"registry", "monitor"}, []string{"issuer client omitted: PermissionDenied: GetClient needs tenant-admin"}},
		{"no client yet", &sources{clientErr: status.Error(codes.NotFound, "client not found"), usage: realisticUsage()},
			false, false, []string{"registry", "monitor"}, []string{"issuer client omitted: NotFound: client not found"}},
		{"monitor down", &sources{client: realisticClient(), usageErr: status.Error(codes.Unavailable, "connection refused")},
			false, false, []string{"registry", "issuer"}, []string{"resources seen omitted: Unavailable: connection refused"}},
		{"both fail", &sources{clientErr: errors.New("dial: no route"), usageErr: status.Error(codes.Unimplemented, "unknown service")},
			false, false, []string{"registry"}, []string{"issuer client omitted: dial: no route", "resources seen omitted: Unimplemented: unknown service"}},
		{"not asked", &sources{}, true, true, []string{"registry"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.agent = realisticAgent()
			b := builder(tt.s)
			if tt.nilClients {
				b.Clients = nil
			}
			if tt.nilUsage {
				b.Usage = nil
			}
			g, err := b.Build(t.Context(), claimsBot)
			if err != nil {
				t.Fatalf("Build failed: %v", err)
			}
			if !slices.Equal(g.Sources, tt.wantSources) || !slices.Equal(g.Notes, tt.wantNotes) {
				t.Fatalf("sources %v notes %q, want %v %q", g.Sources, g.Notes, tt.wantSources, tt.wantNotes)
			}
			_, hasClient := g.Node("client:agt_claims")
			if hasClient != slices.Contains(tt.wantSources, "issuer") || (g.Usage != nil) != slices.Contains(tt.wantSources, "monitor") {
				t.Fatalf("client node %v, usage %v with sources %v", hasClient, g.Usage, g.Sources)
			}
			for _, e := range g.Edges {
				if _, ok := g.Node(e.To); !ok {
					t.Fatalf("edge %v to a node the graph does not have", e)
				}
			}
		})
	}
}

func TestBuildFailsWithoutTheAgent(t *testing.T) {
	refused := status.Error(codes.NotFound, "agent not found")
	_, err := builder(&sources{agentErr: refused}).Build(t.Context(), claimsBot)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err = %v, want the registry's NotFound as it is", err)
	}
	if _, err := (assetgraph.Builder{}).Build(t.Context(), claimsBot); err == nil {
		t.Fatal("a builder without an agent source built a graph")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s := &sources{agent: realisticAgent(), clientErr: context.Canceled}
	if _, err := builder(s).Build(ctx, claimsBot); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled build = %v, want context.Canceled", err)
	}
}

func TestDependenciesAreNormalised(t *testing.T) {
	tests := []struct {
		name string
		in   []*registryv1.Dependency
		want []assetgraph.Dependency
	}{
		{"none", nil, []assetgraph.Dependency{}},
		{"kind lowercased and defaulted", []*registryv1.Dependency{{Kind: " Storage ", Uri: " s3://b/p "}, {Uri: "https://x.example"}},
			[]assetgraph.Dependency{{Kind: "other", URI: "https://x.example"}, {Kind: "storage", URI: "s3://b/p"}}},
		{"no uri dropped", []*registryv1.Dependency{{Kind: "queue", Description: "somewhere"}}, []assetgraph.Dependency{}},
		{"duplicates merged, first description kept", []*registryv1.Dependency{{Kind: "queue", Uri: "nats://q", Description: "a"}, {Kind: "QUEUE", Uri: "nats://q", Description: "b"}},
			[]assetgraph.Dependency{{Kind: "queue", URI: "nats://q", Description: "a"}}},
		{"same uri, two kinds", []*registryv1.Dependency{{Kind: "webhook", Uri: "https://h"}, {Kind: "api", Uri: "https://h"}},
			[]assetgraph.Dependency{{Kind: "api", URI: "https://h"}, {Kind: "webhook", URI: "https://h"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := assetgraph.Dependencies(&registryv1.Agent{Dependencies: tt.in})
			if got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Dependencies = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestRedactURI(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://hooks.example/a?b=c", "https://hooks.example/a?b=c"},
		{"amqp://user:pw@mq/x", "amqp://user:REDACTED@mq/x"},
		{"amqp://user@mq/x", "amqp://user@mq/x"},
		{"https://h/p?X-Amz-Signature=abc&X-Amz-Credential=def&page=2", "https://h/p?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&page=2"},
		{"https://h/p?access_token=t", "https://h/p?access_token=REDACTED"},
		{"arn:aws:sqs:eu-west-1:123:claims", "arn:aws:sqs:eu-west-1:123:claims"},
		{"not a uri", "not a uri"},
	}
	for _, tt := range tests {
		if got := assetgraph.RedactURI(tt.in); got != tt.want {
			t.Errorf("RedactURI(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
