package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/testkit"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/policy/app"
	"github.com/agentid/agentid/services/policy/internal/admission"
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
	return evaluateAs(t, e, "lifecycle", agent, requestID)
}

func evaluateAs(t *testing.T, e *env, token string, agent *registryv1.Agent, requestID string) (*policyv1.Decision, error) {
	t.Helper()
	resp, err := e.client.EvaluateAdmission(testkit.WithBearer(t.Context(), token), &policyv1.EvaluateAdmissionRequest{
		Tenant: "acme", Agent: agentStruct(t, agent), RequestId: requestID,
	})
	return resp.GetDecision(), err
}

// record is the POLICY event recording the decision made under requestID in tenant acme.
func record(t *testing.T, e *env, requestID string) (eventstore.Event, *policyv1.DecisionRecorded) {
	t.Helper()
	events, _, err := eventstore.New(e.js).Load(t.Context(), "acme", eventstore.AggregatePolicy, admission.DecisionAggregateID(requestID))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("%d events record request id %q, want 1", len(events), requestID)
	}
	rec, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](events[0])
	if err != nil {
		t.Fatal(err)
	}
	return events[0], rec
}

// loggedDecision is the last event on telemetry.acme.policy.decided (the decision log).
func loggedDecision(t *testing.T, e *env) (eventstore.Event, *policyv1.DecisionRecorded) {
	t.Helper()
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
	rec, err := eventstore.DecodeAs[*policyv1.DecisionRecorded](ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, rec
}

// highRiskAgent is lowRiskAgent's name with content that needs every approval: production, PHI,
// autonomous, write scopes.
func highRiskAgent() *registryv1.Agent {
	a := lowRiskAgent()
	a.Environment = registryv1.Environment_ENVIRONMENT_PROD
	a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI
	a.Autonomy = registryv1.Autonomy_AUTONOMY_AUTONOMOUS
	a.RiskTier = registryv1.RiskTier_RISK_TIER_HIGH
	a.Scopes = []string{"records.write", "records.read", "payments.write"}
	return a
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
	want, err := admission.InputDigest("acme", lowRiskAgent())
	if err != nil {
		t.Fatal(err)
	}
	if _, rec := record(t, e, requestID); rec.GetInputSha256() != want || len(want) != 64 {
		t.Fatalf("recorded input digest %q, want %q", rec.GetInputSha256(), want)
	}

	// A new policy bundle (another replica, or this one after a push) that denies everything.
	frozen := startOn(t, n, app.Config{BundleDir: denyAllBundle(t)}, false)
	if frozen.app.BundleVersion() == e.app.BundleVersion() {
		t.Fatal("the two bundles have the same version")
	}
	booked := lowRiskAgent() // the same agent after the registry moved it on: not an input of the decision
	booked.State, booked.StateReason, booked.Etag = registryv1.AgentState_AGENT_STATE_ACTIVE, "provisioned", "v7"
	booked.UpdateTime = timestamppb.New(fixedNow)
	tests := []struct {
		name  string
		env   *env
		agent *registryv1.Agent
	}{
		{name: "repeat", env: e, agent: lowRiskAgent()},
		{name: "repeat after the bundle changed", env: frozen, agent: lowRiskAgent()},
		{name: "repeat after the agent's state and etag changed", env: e, agent: booked},
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
}

func TestRequestIDReusedForAnotherInputIsRefused(t *testing.T) {
	n := testkit.StartNATS(t)
	e := startOn(t, n, app.Config{}, true)
	frozen := startOn(t, n, app.Config{BundleDir: denyAllBundle(t)}, false)
	const requestID = "provision/acme/faq/policy"
	first, err := evaluate(t, e, lowRiskAgent(), requestID)
	if err != nil {
		t.Fatal(err)
	}
	change := func(f func(a *registryv1.Agent)) *registryv1.Agent {
		a := lowRiskAgent()
		f(a)
		return a
	}
	tests := []struct {
		name  string
		env   *env
		agent *registryv1.Agent
	}{
		{name: "the agent escalated since", env: e, agent: highRiskAgent()},
		{name: "a scope added", env: e, agent: change(func(a *registryv1.Agent) { a.Scopes = append(a.Scopes, "kb.admin") })},
		{name: "another owner", env: e, agent: change(func(a *registryv1.Agent) { a.Owner = "team:other" })},
		{name: "a field the built-in policy does not read", env: e, agent: change(func(a *registryv1.Agent) { a.Purpose = "something else" })},
		{name: "another agent", env: e, agent: change(func(a *registryv1.Agent) { a.Name, a.AgentId = "tenants/acme/agents/other", "other" })},
		{name: "another input on another replica", env: frozen, agent: highRiskAgent()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evaluate(t, tt.env, tt.agent, requestID)
			if status.Code(err) != codes.InvalidArgument || errs.FromStatus(err).Field != "request_id" {
				t.Fatalf("request id reused for another input answered %v, %v; want InvalidArgument naming request_id", got, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "request id was used for a different admission input") {
				t.Errorf("message %q does not say the request id was used for a different input", msg)
			}
			if records, logged := counts(t, e); records != 1 || logged != 1 {
				t.Fatalf("a refused request wrote: %d records, %d logged decisions, want 1 and 1", records, logged)
			}
		})
	}
	// The record is untouched: the original input still gets the original decision.
	got, err := evaluate(t, e, lowRiskAgent(), requestID)
	if err != nil || !proto.Equal(got, first) {
		t.Fatalf("the original input after refusals answered %v, %v; want %v", got, err, first)
	}
}

func TestTenantAdminCannotPlantAProvisioningDecision(t *testing.T) {
	// (A platform-admin or lifecycle-worker role outside system is refused outright:
	// TestEvaluateAdmissionAuthorization.)
	for _, token := range []string{"acme-admin", "acme-delegated", "system-delegated"} {
		t.Run(token, func(t *testing.T) {
			e := start(t, app.Config{}, true)
			// The provisioning run's request id is predictable; the caller asks first, with a
			// harmless agent under the name the real registration will get.
			const requestID = "provision/acme/faq/policy"
			planted, err := evaluateAs(t, e, token, lowRiskAgent(), requestID)
			if err != nil {
				t.Fatal(err)
			}
			if planted.GetOutcome() != policyv1.Outcome_OUTCOME_ALLOW {
				t.Fatalf("dry run answered %v, want ALLOW", planted)
			}
			if records, logged := counts(t, e); records != 0 || logged != 1 {
				t.Fatalf("dry run wrote %d records and %d logged decisions, want 0 and 1", records, logged)
			}
			again, err := evaluateAs(t, e, token, lowRiskAgent(), requestID)
			if err != nil {
				t.Fatal(err)
			}
			if again.GetDecisionId() == planted.GetDecisionId() {
				t.Fatalf("a dry run with a request id was answered from a record (decision %s)", planted.GetDecisionId())
			}

			// The provisioning run evaluates the agent actually registered.
			got, err := evaluate(t, e, highRiskAgent(), requestID)
			if err != nil {
				t.Fatal(err)
			}
			if got.GetOutcome() != policyv1.Outcome_OUTCOME_REQUIRE_APPROVAL || !slices.Equal(got.GetRequiredApprovals(), []string{"owner", "security", "compliance"}) {
				t.Fatalf("provisioning run answered %v, want REQUIRE_APPROVAL by owner, security and compliance", got)
			}
			if got.GetDecisionId() == planted.GetDecisionId() || got.GetDecisionId() == again.GetDecisionId() {
				t.Fatalf("provisioning run got a dry run's decision %s", got.GetDecisionId())
			}
			_, rec := record(t, e, requestID)
			if !proto.Equal(rec.GetDecision(), got) {
				t.Fatalf("recorded %v, answered %v", rec.GetDecision(), got)
			}
			// A dry run after the record exists neither reads nor changes it.
			if d, err := evaluateAs(t, e, token, lowRiskAgent(), requestID); err != nil || d.GetOutcome() != policyv1.Outcome_OUTCOME_ALLOW {
				t.Fatalf("dry run after the record: %v, %v; want a fresh ALLOW", d, err)
			}
			if d, err := evaluate(t, e, highRiskAgent(), requestID); err != nil || !proto.Equal(d, got) {
				t.Fatalf("provisioning repeat: %v, %v; want %v", d, err, got)
			}
			if records, _ := counts(t, e); records != 1 {
				t.Fatalf("%d records, want 1", records)
			}
		})
	}
}

func TestRepeatPublishesADecisionLogEntryLostToACrashOnce(t *testing.T) {
	e := start(t, app.Config{}, true)
	recreateTelemetry := func() {
		t.Helper()
		if err := e.js.DeleteStream(t.Context(), eventstore.StreamTelemetry); err != nil {
			t.Fatal(err)
		}
		if err := eventstore.New(e.js).EnsureStreams(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// The crash: the decision is recorded, its decision log entry never written.
	if err := e.js.DeleteStream(t.Context(), eventstore.StreamTelemetry); err != nil {
		t.Fatal(err)
	}
	const requestID = "provision/acme/faq/policy"
	ctx, cancel := context.WithTimeout(testkit.WithBearer(t.Context(), "lifecycle"), 20*time.Second)
	defer cancel()
	resp, err := e.client.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{Tenant: "acme", Agent: agentStruct(t, lowRiskAgent()), RequestId: requestID})
	if err != nil {
		t.Fatal(err)
	}
	first := resp.GetDecision()
	recEvent, _ := record(t, e, requestID)
	if err := eventstore.New(e.js).EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry); n != 0 {
		t.Fatalf("decision log holds %d entries before the repeat", n)
	}

	wantID := admission.DecisionLogEventID(recEvent.ID)
	steps := []struct {
		name   string
		before func()
	}{
		{name: "the repeat after the crash writes the entry"},
		{name: "another repeat writes nothing"},
		{name: "after the duplicate window the entry keeps its id", before: recreateTelemetry},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before()
			}
			got, err := evaluate(t, e, lowRiskAgent(), requestID)
			if err != nil || !proto.Equal(got, first) {
				t.Fatalf("repeat answered %v, %v; want %v", got, err, first)
			}
			if n := testkit.StreamMessages(t, e.js, eventstore.StreamTelemetry); n != 1 {
				t.Fatalf("decision log holds %d entries, want 1", n)
			}
			ev, rec := loggedDecision(t, e)
			if ev.ID != wantID || ev.ID == recEvent.ID {
				t.Fatalf("decision log entry id %s, want %s (derived from record %s)", ev.ID, wantID, recEvent.ID)
			}
			if !proto.Equal(rec.GetDecision(), first) || ev.Subject != recEvent.Subject || ev.Metadata != recEvent.Metadata {
				t.Fatalf("decision log entry %v (subject %q, metadata %+v) is not the record's %v (%q, %+v)",
					rec.GetDecision(), ev.Subject, ev.Metadata, first, recEvent.Subject, recEvent.Metadata)
			}
		})
	}
}

func TestDecisionLogEventIDIsADeterministicUUIDv7(t *testing.T) {
	const record = "019a3c1e-5b7d-7c2a-9f00-0123456789ab"
	id := admission.DecisionLogEventID(record)
	u, err := uuid.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version() != 7 || u.Variant() != uuid.RFC4122 || id[:13] != record[:13] {
		t.Errorf("id %s: version %d, variant %v; want a UUIDv7 with the record's timestamp %s", id, u.Version(), u.Variant(), record[:13])
	}
	if again := admission.DecisionLogEventID(record); again != id {
		t.Errorf("ids differ: %s and %s", id, again)
	}
	if other := admission.DecisionLogEventID("019a3c1e-5b7d-7c2a-9f00-0123456789ac"); other == id {
		t.Errorf("two records share the decision log id %s", id)
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

// plantRecord appends a decision record under requestID the way a writer other than Evaluate
// could: with the given payload and event metadata.
func plantRecord(t *testing.T, e *env, requestID string, rec *policyv1.DecisionRecorded, md eventstore.Metadata) {
	t.Helper()
	aggID := admission.DecisionAggregateID(requestID)
	_, err := eventstore.New(e.js, eventstore.WithSource("agentid/policy")).Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: eventstore.AggregatePolicy, AggregateID: aggID, IdempotencyKey: aggID,
		Type: admission.EventType, Subject: "tenants/acme/agents/faq", Data: rec, Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUntrustedOrDigestlessRecordIsRefused(t *testing.T) {
	e := start(t, app.Config{}, true)
	digest, err := admission.InputDigest("acme", lowRiskAgent())
	if err != nil {
		t.Fatal(err)
	}
	input, err := structpb.NewStruct(map[string]any{"tenant": "acme", "now": fixedNow.Format(time.RFC3339Nano)})
	if err != nil {
		t.Fatal(err)
	}
	input.Fields["agent"] = structpb.NewStructValue(agentStruct(t, lowRiskAgent()))
	service := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "lifecycle-worker", Kind: eventstore.ActorService}}
	tests := []struct {
		name       string
		md         eventstore.Metadata
		digest     string
		dryRun     bool
		wantAnswer bool
	}{
		{name: "written by the service for itself (control)", md: service, digest: digest, wantAnswer: true},
		{name: "no input digest (an unreleased format), even with the input it was made for", md: service},
		{name: "written by a human", md: eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}}, digest: digest},
		{name: "written by an agent", md: eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "faq", Kind: eventstore.ActorAgent}}, digest: digest},
		{name: "written by a service on behalf of a user", md: eventstore.Metadata{Tenant: "acme", Actor: service.Actor, OnBehalfOf: "alice"}, digest: digest},
		{name: "marked as a dry run", md: service, digest: digest, dryRun: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requestID := fmt.Sprintf("provision/acme/faq-%d/policy", i)
			planted := &policyv1.Decision{DecisionId: "019a3c1e-5b7d-7c2a-9f00-0123456789ab", Outcome: policyv1.Outcome_OUTCOME_ALLOW, BundleVersion: "sha256:planted"}
			plantRecord(t, e, requestID, &policyv1.DecisionRecorded{Tenant: "acme", DecisionPoint: "admission", Subject: "tenants/acme/agents/faq",
				Decision: planted, Input: input, RequestId: requestID, InputSha256: tt.digest, DryRun: tt.dryRun}, tt.md)
			recordsBefore, loggedBefore := counts(t, e)

			got, err := evaluate(t, e, lowRiskAgent(), requestID)
			records, logged := counts(t, e)
			if tt.wantAnswer {
				if err != nil || !proto.Equal(got, planted) {
					t.Fatalf("a record written by the service answered %v, %v; want %v", got, err, planted)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || errs.FromStatus(err).Field != "request_id" {
				t.Fatalf("answered %v, %v; want InvalidArgument naming request_id", got, err)
			}
			if md := errs.FromStatus(err).Metadata; md["request_id"] != requestID {
				t.Errorf("error metadata %v does not name the request id", md)
			}
			if records != recordsBefore || logged != loggedBefore {
				t.Fatalf("a refused record led to writes: records %d -> %d, logged %d -> %d", recordsBefore, records, loggedBefore, logged)
			}
		})
	}
}

func TestDryRunDecisionLogEntryCarriesNoRequestID(t *testing.T) {
	const requestID = "provision/acme/faq/policy"
	tests := []struct {
		name  string
		token string
		ctx   func(ctx context.Context) context.Context
	}{
		{name: "tenant-admin", token: "acme-admin"},
		{name: "tenant-admin naming the request id as its correlation too", token: "acme-admin", ctx: func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, grpcx.RequestIDHeader, requestID)
		}},
		{name: "delegated platform-admin of system", token: "system-delegated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, app.Config{}, true)
			ctx := testkit.WithBearer(t.Context(), tt.token)
			if tt.ctx != nil {
				ctx = tt.ctx(ctx)
			}
			resp, err := e.client.EvaluateAdmission(ctx, &policyv1.EvaluateAdmissionRequest{
				Tenant: "acme", Agent: agentStruct(t, highRiskAgent()), RequestId: requestID,
			})
			if err != nil {
				t.Fatal(err)
			}
			ev, rec := loggedDecision(t, e)
			if rec.GetDecision().GetDecisionId() != resp.GetDecision().GetDecisionId() {
				t.Fatalf("last logged decision %s, want the dry run's %s", rec.GetDecision().GetDecisionId(), resp.GetDecision().GetDecisionId())
			}
			if !rec.GetDryRun() || rec.GetRequestId() != "" || ev.Metadata.CorrelationID == requestID {
				t.Fatalf("dry run logged with dry_run=%v request_id=%q correlation=%q; want dry_run, no request id and a correlation other than %q",
					rec.GetDryRun(), rec.GetRequestId(), ev.Metadata.CorrelationID, requestID)
			}

			// The provisioning run's decision is logged as a real one under the request id.
			if _, err := evaluate(t, e, lowRiskAgent(), requestID); err != nil {
				t.Fatal(err)
			}
			_, rec = loggedDecision(t, e)
			if rec.GetDryRun() || rec.GetRequestId() != requestID {
				t.Fatalf("recorded decision logged with dry_run=%v request_id=%q; want a real decision under %q", rec.GetDryRun(), rec.GetRequestId(), requestID)
			}
		})
	}
}
