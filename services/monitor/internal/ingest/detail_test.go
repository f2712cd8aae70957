package ingest_test

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

// TestDetailCanonical checks that every mapped detail is exactly what json.Marshal writes for its
// members (keys sorted, strings escaped as encoding/json escapes them, numbers formatted as it
// formats them): the detail of a stored row does not depend on how ingest builds it.
func TestDetailCanonical(t *testing.T) {
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "orders-api", Kind: eventstore.ActorAgent}}
	odd := "a<b>&\"q\"\\ é \u2028 \x01"
	full := &monitorv1.AccessEvent{
		EventId: "e-" + odd, Time: timestamppb.New(at), Tenant: "acme", Agent: "tenants/acme/agents/faq", ClientId: "faq",
		Subject: odd, Resource: "/orders?x=<1>&y=2", Action: "GET", Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED,
		Reason: odd, Status: 403, ResponseBytes: 1 << 40, Rows: -3, Latency: durationpb.New(1234567 * time.Microsecond),
		TraceId: "t", SourceAddress: "10.0.0.7:1", TokenId: "j", Audience: "https://a.example", TokenBinding: "dpop",
	}
	tiny := &monitorv1.AccessEvent{EventId: "e2", Tenant: "acme", Latency: durationpb.New(time.Nanosecond)}
	other := &monitorv1.AccessEvent{EventId: "e3", Tenant: "other"}
	tests := []struct {
		name string
		e    eventstore.Event
	}{
		{"access", envelope(t, "access.recorded", "tenants/acme/clients/orders-api", &monitorv1.RecordAccessRequest{
			BatchId: "b<1>", Dropped: 7, Events: []*monitorv1.AccessEvent{full, tiny, other}}, md)},
		{"token issued", envelope(t, "token.requested", "", &issuerv1.TokenRequested{
			Tenant: "acme", ClientId: "faq", GrantType: "client_credentials", TokenId: "tok&1", Audiences: []string{"urn:<a>", "b"},
			ExpireTime: timestamppb.New(at.Add(1234567 * time.Nanosecond)), RemoteAddr: "10.1.2.3:443",
			Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED}, md)},
		{"token denied", envelope(t, "token.requested", "", &issuerv1.TokenRequested{
			Tenant: "acme", GrantType: odd, Error: "invalid_scope", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED}, md)},
		{"policy", envelope(t, "policy.decided", "", &policyv1.DecisionRecorded{
			Tenant: "acme", DecisionPoint: "admission", DryRun: true, Decision: &policyv1.Decision{
				DecisionId: "d", BundleVersion: "sha256:ab", Reasons: []string{odd, ""}, RequiredApprovals: []string{"owner"}}}, md)},
		{"policy bare", envelope(t, "policy.decided", "", &policyv1.DecisionRecorded{Tenant: "acme"}, md)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := ingest.Map(tt.e)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) == 0 {
				t.Fatal("no rows")
			}
			for _, r := range rows {
				var members map[string]any
				if err := json.Unmarshal([]byte(r.Detail), &members); err != nil {
					t.Fatalf("detail %q: %v", r.Detail, err)
				}
				want, err := json.Marshal(members)
				if err != nil {
					t.Fatal(err)
				}
				if r.Detail != string(want) {
					t.Errorf("%s detail\n got %s\nwant %s", r.Kind, r.Detail, want)
				}
			}
		})
	}
}
