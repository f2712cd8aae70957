package workflows_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

const tenant = "acme"

// fixture is one workflow test: fake services, a real event store and a test workflow environment
// with the real activities registered.
type fixture struct {
	fakes  *workflowstest.Services
	store  *eventstore.Store
	acts   *workflows.Activities
	env    *testsuite.TestWorkflowEnvironment
	stages *stageLog
}

// stageLog records the Stage search attribute as the workflow upserts it.
type stageLog struct {
	mu     sync.Mutex
	stages []string
}

func (l *stageLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.stages...)
}

func newStore(t *testing.T) *eventstore.Store {
	t.Helper()
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/lifecycle"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	return store
}

func activitiesFor(t *testing.T, fakes *workflowstest.Services, store *eventstore.Store) *workflows.Activities {
	cc := fakes.Conn(t)
	return &workflows.Activities{
		Registry:       registryv1.NewRegistryServiceClient(cc),
		Issuer:         issuerv1.NewIssuerServiceClient(cc),
		Policy:         policyv1.NewPolicyServiceClient(cc),
		Events:         store,
		ApprovalTokens: approvalIssuer(t).Verifier,
		Runs:           &workflowstest.Runs{},
	}
}

// The approval token issuer shared by the tests of the package (its JWKS server lives as long as the
// test binary).
var (
	approvalsOnce sync.Once
	approvals     *workflowstest.ApprovalIssuer
	approvalsErr  error
)

func approvalIssuer(t *testing.T) *workflowstest.ApprovalIssuer {
	t.Helper()
	approvalsOnce.Do(func() { approvals, _, approvalsErr = workflowstest.StartApprovalIssuer() })
	if approvalsErr != nil {
		t.Fatal(approvalsErr)
	}
	return approvals
}

// tokenApproval is an approval carrying a fresh approval token of sub (holding roles) for the step
// and decision on agentID's run in the test environment.
func tokenApproval(t *testing.T, agentID, sub, step, decision, comment string, roles ...string) workflows.Approval {
	t.Helper()
	return workflows.Approval{Comment: comment, Token: approvalIssuer(t).Token(t, authn.ApprovalClaims{
		Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step, Decision: decision,
		Run: workflowstest.TestRunID, Roles: roles,
	})}
}

func newFixture(t *testing.T, workflowID string) *fixture {
	t.Helper()
	f := &fixture{fakes: workflowstest.Start(t), store: newStore(t), stages: &stageLog{}}
	f.acts = activitiesFor(t, f.fakes, f.store)
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(quietLogger())
	f.env = suite.NewTestWorkflowEnvironment()
	workflows.Register(f.env, f.acts)
	f.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: workflowID, TaskQueue: workflows.TaskQueue})
	f.env.OnUpsertTypedSearchAttributes(mock.Anything).Run(func(args mock.Arguments) {
		sa := args.Get(0).(temporal.SearchAttributes)
		if v, ok := sa.GetKeyword(workflows.StageKey); ok {
			f.stages.mu.Lock()
			f.stages.stages = append(f.stages.stages, v)
			f.stages.mu.Unlock()
		}
	}).Return(nil)
	return f
}

// events returns the lifecycle events recorded for the agent.
func (f *fixture) events(t *testing.T, agentID string) []eventstore.Event {
	t.Helper()
	evs, _, err := f.store.Load(t.Context(), tenant, eventstore.AggregateLifecycle, agentID)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (f *fixture) status(t *testing.T) workflows.Status {
	t.Helper()
	v, err := f.env.QueryWorkflow(workflows.StatusQuery)
	if err != nil {
		t.Fatalf("query status: %v", err)
	}
	var s workflows.Status
	if err := v.Get(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// claimsOf are the claims of an approval token of sub for the step and decision on agentID's run.
func claimsOf(t *testing.T, agentID, sub, step, decision, run string, roles ...string) authn.ApprovalClaims {
	t.Helper()
	return authn.ApprovalClaims{Subject: sub, Agent: workflows.AgentName(tenant, agentID), Step: step, Decision: decision, Run: run, Roles: roles}
}
