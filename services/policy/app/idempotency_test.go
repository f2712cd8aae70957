package app_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/app"
)

// denyAllBundle writes a bundle that denies every agent and returns its directory.
func denyAllBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rego := "package agentid.admission\n\ndecision := {\"outcome\": \"deny\", \"reasons\": [\"frozen\"], \"required_approvals\": []}\n"
	if err := os.WriteFile(filepath.Join(dir, "admission.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// counts are the decisions recorded so far: on POLICY (one per request id) and in the decision log.
func counts(t *testing.T, e *env) (records, logged uint64) {
	t.Helper()
	return testkit.StreamMessages(t, e.js, eventstore.StreamPolicy), testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry)
}

func evaluate(t *testing.T, e *env, agent *registryv1.Agent, requestID string) (*policyv1.Decision, error) {
	t.Helper()
	resp, err := e.client.EvaluateAdmission(testkit.WithBearer(t.Context(), "lifecycle"), &policyv1.EvaluateAdmissionRequest{
		Tenant: "acme", Agent: agentStruct(t, agent), RequestId: requestID,
	})
	return resp.GetDecision(), err
}

func TestEvaluateAdmissionIsIdempotentByRequestID(t *testing.T) {
	n := testkit.StartNATS(t)
	e := startOn(t, n, app.Config{}, true)
	const requestID = "provision/acme/faq/policy"

	first, err := evaluate(t, e, lowRiskAgent(), requestID)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetOutcome() != policyv1.Outcome_OUTCOME_ALLOW {
		t.Fatalf("first decision %v, want ALLOW", first)
	}
	if records, logged := counts(t, e); records != 1 || logged != 1 {
		t.Fatalf("after the first evaluation: %d records, %d logged decisions, want 1 and 1", records, logged)
	}

	// A new policy bundle (another replica, or this one after a push) that denies everything.
	frozen := startOn(t, n, app.Config{BundleDir: denyAllBundle(t)}, false)
	if frozen.app.BundleVersion() == e.app.BundleVersion() {
		t.Fatal("the two bundles have the same version")
	}
	changed := lowRiskAgent()
	changed.Scopes = []string{"kb.admin"} // would be denied by either bundle
	tests := []struct {
		name  string
		env   *env
		agent *registryv1.Agent
	}{
		{name: "repeat", env: e, agent: lowRiskAgent()},
		{name: "repeat after the bundle changed", env: frozen, agent: lowRiskAgent()},
		{name: "repeat with the agent changed since", env: e, agent: changed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evaluate(t, tt.env, tt.agent, requestID)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, first) {
				t.Fatalf("repeat answered %v, want the first decision %v", got, first)
			}
			if records, logged := counts(t, e); records != 1 || logged != 1 {
				t.Fatalf("a repeat recorded a decision: %d records, %d logged", records, logged)
			}
		})
	}

	// Another request id evaluates anew, under the bundle of the replica it reaches.
	for i, tt := range []struct {
		env  *env
		want policyv1.Outcome
	}{{e, policyv1.Outcome_OUTCOME_ALLOW}, {frozen, policyv1.Outcome_OUTCOME_DENY}} {
		got, err := evaluate(t, tt.env, lowRiskAgent(), fmt.Sprintf("provision/acme/faq-%d/policy", i))
		if err != nil {
			t.Fatal(err)
		}
		if got.GetDecisionId() == first.GetDecisionId() || got.GetOutcome() != tt.want || got.GetBundleVersion() != tt.env.app.BundleVersion() {
			t.Fatalf("new request id answered %v, want a fresh %s from bundle %s", got, tt.want, tt.env.app.BundleVersion())
		}
	}
	if records, logged := counts(t, e); records != 3 || logged != 3 {
		t.Fatalf("after two new request ids: %d records, %d logged, want 3 and 3", records, logged)
	}

	// The same request id for another agent is a caller bug, refused without recording anything.
	other := lowRiskAgent()
	other.Name, other.AgentId = "tenants/acme/agents/other", "other"
	_, err = evaluate(t, e, other, requestID)
	if status.Code(err) != codes.InvalidArgument || errs.FromStatus(err).Field != "request_id" {
		t.Fatalf("request id reused for another agent: %v, want InvalidArgument naming request_id", err)
	}
	if records, logged := counts(t, e); records != 3 || logged != 3 {
		t.Fatalf("a refused request recorded a decision: %d records, %d logged", records, logged)
	}
}

func TestConcurrentRepeatsShareOneDecision(t *testing.T) {
	n := testkit.StartNATS(t)
	replicas := []*env{startOn(t, n, app.Config{}, true), startOn(t, n, app.Config{BundleDir: denyAllBundle(t)}, false)}
	const callers = 8
	for round := range 5 {
		requestID := fmt.Sprintf("provision/acme/race-%d/policy", round)
		decisions := make([]*policyv1.Decision, callers)
		errList := make([]error, callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				<-start
				decisions[i], errList[i] = evaluate(t, replicas[i%2], lowRiskAgent(), requestID)
			})
		}
		close(start)
		wg.Wait()
		for i := range callers {
			if errList[i] != nil {
				t.Fatalf("round %d caller %d: %v", round, i, errList[i])
			}
			if !proto.Equal(decisions[i], decisions[0]) {
				t.Fatalf("round %d: callers got different decisions: %v and %v", round, decisions[0], decisions[i])
			}
		}
		if records, logged := counts(t, replicas[0]); records != uint64(round+1) || logged != uint64(round+1) {
			t.Fatalf("round %d: %d records, %d logged decisions, want %d of each", round, records, logged, round+1)
		}
	}
}

func TestEvaluateAdmissionWithoutRequestIDDecidesEveryTime(t *testing.T) {
	e := start(t, app.Config{}, true)
	first, err := evaluate(t, e, lowRiskAgent(), "")
	if err != nil {
		t.Fatal(err)
	}
	second, err := evaluate(t, e, lowRiskAgent(), "")
	if err != nil {
		t.Fatal(err)
	}
	if first.GetDecisionId() == second.GetDecisionId() {
		t.Fatalf("two dry runs share decision id %s", first.GetDecisionId())
	}
	if records, logged := counts(t, e); records != 0 || logged != 2 {
		t.Fatalf("dry runs: %d records, %d logged, want 0 and 2", records, logged)
	}
}

func TestUnrecordableDecisionIsUnavailable(t *testing.T) {
	e := start(t, app.Config{}, false) // no streams: nothing can be recorded
	_, err := evaluate(t, e, lowRiskAgent(), "provision/acme/faq/policy")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
	if got := errs.FromStatus(err); got.Reason != "DECISION_NOT_RECORDED" || got.Metadata["request_id"] != "provision/acme/faq/policy" {
		t.Fatalf("got reason %q metadata %v, want DECISION_NOT_RECORDED naming the request id", got.Reason, got.Metadata)
	}
}
