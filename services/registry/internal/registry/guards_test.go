package registry_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// ownerMD is the metadata of a command by the owner team:support.
var ownerMD = eventstore.Metadata{Actor: eventstore.Actor{ID: "team:support", Kind: eventstore.ActorHuman}, CorrelationID: "test"}

// countingAdmission admits everything, counting its calls and whether they were dry runs, and
// answers with no override.
type countingAdmission struct {
	mu           sync.Mutex
	calls, dries int
}

func (c *countingAdmission) AdmitUpdate(ctx context.Context, _ string, _, _ *registryv1.Agent) (*registryv1.Classification, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if registry.DryRun(ctx) {
		c.dries++
	}
	return nil, nil
}

func (c *countingAdmission) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.dries
}

// update applies edit to the agent as currently read and updates paths, as md.
func (e *recordEnv) update(t *testing.T, id string, paths []string, md eventstore.Metadata, requireOwner string, validateOnly bool, edit func(*registryv1.Agent)) (*registryv1.Agent, error) {
	t.Helper()
	cur, err := e.svc.GetAgent(t.Context(), "acme", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := proto.CloneOf(cur)
	edit(in)
	got, _, err := e.svc.UpdateAgent(t.Context(), registry.UpdateAgent{
		Tenant: "acme", AgentID: id, Agent: in, Paths: paths, Etag: cur.GetEtag(), RequireOwner: requireOwner, ValidateOnly: validateOnly,
	}, md)
	return got, err
}

// TestUpdatePendingEscalationNeedsAdmission: an agent waiting for its provisioning decision cannot
// be escalated behind the policy's back: without an admission the escalation is refused (fail
// closed) and nothing is written; a neutral change passes.
func TestUpdatePendingEscalationNeedsAdmission(t *testing.T) {
	e := newRecordEnv(t, nil)
	a := e.registerWith(t, "pend", false, nil)
	before := e.streamLen(t)
	for _, tc := range []struct {
		name  string
		paths []string
		edit  func(*registryv1.Agent)
	}{
		{"add write scope", []string{"scopes"}, func(x *registryv1.Agent) { x.Scopes = append(x.Scopes, "payment.initiate") }},
		{"add role", []string{"roles"}, func(x *registryv1.Agent) { x.Roles = []string{"ledger-writer"} }},
		{"phi", []string{"data_sensitivity"}, func(x *registryv1.Agent) { x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI }},
		{"environment", []string{"environment"}, func(x *registryv1.Agent) { x.Environment = registryv1.Environment_ENVIRONMENT_PROD }},
		{"credential type", []string{"credential_type"}, func(x *registryv1.Agent) {
			x.CredentialType = registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.update(t, a.GetAgentId(), tc.paths, admin, "", false, tc.edit)
			wantError(t, err, errs.KindFailedPrecondition, registry.ReasonAdmissionUnavailable, "")
		})
	}
	if after := e.streamLen(t); after != before {
		t.Fatalf("refused escalations of a PENDING agent wrote: stream %d → %d", before, after)
	}
	if _, err := e.update(t, a.GetAgentId(), []string{"display_name"}, admin, "", false, func(x *registryv1.Agent) { x.DisplayName = "FAQ helper" }); err != nil {
		t.Fatalf("neutral update of a PENDING agent: %v", err)
	}
}

// TestEscalationCoversEveryPolicyInput: on an ACTIVE agent every change of an admission policy
// input needs admission, also when the risk tier stays (HIGH → HIGH with PHI) and when the expiry
// is extended or cleared; an earlier expiry and a neutral field do not.
func TestEscalationCoversEveryPolicyInput(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	a := e.registerWith(t, "high", false, func(x *registryv1.Agent) {
		x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
		x.ExpireTime = timestamppb.New(e.clock.Now().Add(48 * time.Hour))
	})
	if _, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "d", ApprovedBy: "policy:auto"}, admin); err != nil {
		t.Fatal(err)
	}
	if a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH {
		t.Fatalf("tier %s, want HIGH", a.GetRiskTier())
	}
	before := e.streamLen(t)
	for _, tc := range []struct {
		name  string
		paths []string
		edit  func(*registryv1.Agent)
	}{
		{"pii to phi", []string{"data_sensitivity"}, func(x *registryv1.Agent) { x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI }},
		{"autonomy", []string{"autonomy"}, func(x *registryv1.Agent) { x.Autonomy = registryv1.Autonomy_AUTONOMY_AUTONOMOUS }},
		{"trust boundary", []string{"trust_boundary"}, func(x *registryv1.Agent) { x.TrustBoundary = registryv1.TrustBoundary_TRUST_BOUNDARY_PUBLIC }},
		{"function", []string{"function"}, func(x *registryv1.Agent) { x.Function = "finance" }},
		{"expiry cleared", []string{"expire_time"}, func(x *registryv1.Agent) { x.ExpireTime = nil }},
		{"expiry extended", []string{"expire_time"}, func(x *registryv1.Agent) {
			x.ExpireTime = timestamppb.New(e.clock.Now().Add(365 * 24 * time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.update(t, a.GetAgentId(), tc.paths, admin, "", false, tc.edit)
			wantError(t, err, errs.KindFailedPrecondition, registry.ReasonAdmissionUnavailable, "")
		})
	}
	if after := e.streamLen(t); after != before {
		t.Fatalf("refused escalations wrote: stream %d → %d", before, after)
	}
	if _, err := e.update(t, a.GetAgentId(), []string{"expire_time", "purpose"}, admin, "", false, func(x *registryv1.Agent) {
		x.ExpireTime = timestamppb.New(e.clock.Now().Add(24 * time.Hour))
		x.Purpose = "Answers questions, for one more day."
	}); err != nil {
		t.Fatalf("earlier expiry and a new purpose: %v", err)
	}
}

// TestOverrideIsReaskedWhenTheDerivedTierChanges: a policy override pinned at activation (LOW)
// does not survive a change of the derived tier: the update is admitted again and, the policy
// setting no override now, the agent takes its derived tier.
func TestOverrideIsReaskedWhenTheDerivedTierChanges(t *testing.T) {
	adm := &countingAdmission{}
	e := newRecordEnv(t, func(c *registry.Config) { c.Admission = adm })
	ctx := t.Context()
	a := e.registerWith(t, "pinned", false, nil)
	act, err := e.svc.ActivateAgent(ctx, registry.ActivateAgent{
		Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "d", ApprovedBy: "policy:auto",
		Override: registry.RiskTierOverride{Tier: registryv1.RiskTier_RISK_TIER_LOW, Reason: "sandbox", Source: "policy-bundle:v1"},
	}, admin)
	if err != nil || act.GetRiskTier() != registryv1.RiskTier_RISK_TIER_LOW {
		t.Fatalf("activate with override: %v %v", act.GetRiskTier(), err)
	}
	got, err := e.update(t, a.GetAgentId(), []string{"data_sensitivity"}, admin, "", false, func(x *registryv1.Agent) {
		x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls, _ := adm.counts(); calls != 1 {
		t.Fatalf("admission asked %d times, want 1", calls)
	}
	c := got.GetClassification()
	if got.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || c.GetOverrideRiskTier() != registryv1.RiskTier_RISK_TIER_UNSPECIFIED || c.GetOverrideReason() != "" {
		t.Fatalf("after the change: tier %s, classification %v; want HIGH without the old override", got.GetRiskTier(), c)
	}
}

// TestValidateOnlyUpdateAdmissionIsADryRun: a validate_only escalation asks admission as a dry run.
func TestValidateOnlyUpdateAdmissionIsADryRun(t *testing.T) {
	adm := &countingAdmission{}
	e := newRecordEnv(t, func(c *registry.Config) { c.Admission = adm })
	a := e.registerWith(t, "dry", false, nil)
	before := e.streamLen(t)
	if _, err := e.update(t, a.GetAgentId(), []string{"scopes"}, admin, "", true, func(x *registryv1.Agent) { x.Scopes = append(x.Scopes, "ticket.write") }); err != nil {
		t.Fatal(err)
	}
	if calls, dries := adm.counts(); calls != 1 || dries != 1 || e.streamLen(t) != before {
		t.Fatalf("admission calls %d, dry runs %d, stream %d → %d; want one dry run and nothing written", calls, dries, before, e.streamLen(t))
	}
}

// TestRegisterRepeatMustBeTheSameCallerAndBody: a request id that registered an agent cannot be
// claimed by another caller or for another body (agent id squatting); the same caller repeating
// the same body gets its agent back.
func TestRegisterRepeatMustBeTheSameCallerAndBody(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	in := validAgent(t)
	first, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: "payments-bot-1", RequireOwner: "team:support"}, ownerMD)
	if err != nil {
		t.Fatal(err)
	}
	n := e.streamLen(t)
	other := proto.CloneOf(in)
	other.Environment = registryv1.Environment_ENVIRONMENT_PROD
	for _, tc := range []struct {
		name string
		in   *registryv1.Agent
		md   eventstore.Metadata
		vo   bool
	}{
		{"other caller", in, admin, false},
		{"other body", other, ownerMD, false},
		{"other body, validate only", other, admin, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: tc.in, RequestID: "payments-bot-1", ValidateOnly: tc.vo}, tc.md)
			wantError(t, err, errs.KindAlreadyExists, registry.ReasonRequestIDReused, "")
			wantMessage(t, err, `request_id: "payments-bot-1"`)
		})
	}
	again, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: proto.CloneOf(in), RequestID: "payments-bot-1", RequireOwner: "team:support"}, ownerMD)
	if err != nil || again.GetName() != first.GetName() {
		t.Fatalf("same caller, same body: %v %v", again.GetName(), err)
	}
	if e.streamLen(t) != n {
		t.Fatalf("refused repeats wrote: stream %d → %d", n, e.streamLen(t))
	}
}

// TestReservedRequestIDsAreForAdmins: an owner may not register under the request ids agents as
// code and adoption use (their agent ids are predictable): InvalidArgument naming request_id,
// nothing written, for a real registration and a validate_only one; an admin may, and so holds the
// agent id.
func TestReservedRequestIDsAreForAdmins(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	for _, id := range []string{"agents-as-code/payments-bot", "adopt-f-123"} {
		t.Run(id, func(t *testing.T) {
			n := e.streamLen(t)
			for _, vo := range []bool{false, true} {
				_, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: id, RequireOwner: "team:support", ValidateOnly: vo}, ownerMD)
				wantError(t, err, errs.KindInvalidArgument, "", "request_id")
				wantMessage(t, err, "request_id: request ids starting with")
			}
			if e.streamLen(t) != n {
				t.Fatalf("a refused registration wrote: stream %d → %d", n, e.streamLen(t))
			}
			a, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: id}, admin)
			if err != nil || a.GetName() != "tenants/acme/agents/"+registry.DeriveAgentID("acme", id) {
				t.Fatalf("admin under %s: %v %v", id, a.GetName(), err)
			}
		})
	}
	// Discovery's adoption (AdoptFinding, which an owner may call) uses adopt- for the owner; it
	// opens no other reserved prefix.
	adopted, err := e.svc.RegisterAgent(registry.WithAdoption(ctx), registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: "adopt-f-456", RequireOwner: "team:support", Proposed: true}, ownerMD)
	if err != nil || adopted.GetName() != "tenants/acme/agents/"+registry.DeriveAgentID("acme", "adopt-f-456") {
		t.Fatalf("owner's adoption: %v %v", adopted.GetName(), err)
	}
	_, err = e.svc.RegisterAgent(registry.WithAdoption(ctx), registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: "agents-as-code/other", RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindInvalidArgument, "", "request_id")
}

// TestReservedLabelsAreForAdmins: an owner can neither register nor change agentid.dev/* labels;
// an admin can, and the owner may then change other labels while keeping them.
func TestReservedLabelsAreForAdmins(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	managed := func(x *registryv1.Agent) {
		x.Labels = map[string]string{"agentid.dev/managed-by": "agentctl", "agentid.dev/source": "payments"}
	}
	in := validAgent(t)
	managed(in)
	_, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: "squat", RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindInvalidArgument, "", "agent.labels[agentid.dev/managed-by]")
	wantMessage(t, err, "agent.labels[agentid.dev/managed-by]: ")

	a := e.registerWith(t, "managed", true, managed)
	_, err = e.update(t, a.GetAgentId(), []string{"labels"}, ownerMD, "team:support", false, func(x *registryv1.Agent) { delete(x.Labels, "agentid.dev/source") })
	wantError(t, err, errs.KindInvalidArgument, "", "agent.labels[agentid.dev/source]")
	if _, err := e.update(t, a.GetAgentId(), []string{"labels"}, ownerMD, "team:support", false, func(x *registryv1.Agent) { x.Labels["team"] = "faq" }); err != nil {
		t.Fatalf("owner changing its own label: %v", err)
	}
	if _, err := e.update(t, a.GetAgentId(), []string{"labels"}, admin, "", false, func(x *registryv1.Agent) { x.Labels["agentid.dev/source"] = "support" }); err != nil {
		t.Fatalf("admin changing a reserved label: %v", err)
	}
}

// TestOwnerAndSponsorChangeOnlyByTransfer: UpdateAgent refuses owner and sponsor paths; the owner
// and sponsor must differ at registration and after a transfer; a transfer's new owner is checked
// like a registration's.
func TestOwnerAndSponsorChangeOnlyByTransfer(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	a := e.registerWith(t, "own", false, nil)
	for _, p := range []string{"owner", "sponsor"} {
		_, err := e.update(t, a.GetAgentId(), []string{p}, admin, "", false, func(x *registryv1.Agent) { x.Owner, x.Sponsor = "bob@corp.example", "carol@corp.example" })
		wantError(t, err, errs.KindInvalidArgument, "", "update_mask")
	}
	_, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: func() *registryv1.Agent {
		x := validAgent(t)
		x.Sponsor = x.GetOwner()
		return x
	}(), RequestID: "self-sponsored"}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "agent.sponsor")
	for _, tc := range []struct {
		name, owner, sponsor, field string
	}{
		{"sponsor becomes owner", "", "team:support", "new_sponsor"},
		{"owner becomes sponsor", "alice@corp.example", "", "new_owner"},
		{"owner with spaces", "bob smith", "", "new_owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.TransferAgentOwnership(ctx, registry.TransferAgentOwnership{
				Tenant: "acme", AgentID: a.GetAgentId(), NewOwner: tc.owner, NewSponsor: tc.sponsor, Reason: "reorg", RequestID: "t-" + tc.field,
			}, admin)
			wantError(t, err, errs.KindInvalidArgument, "", tc.field)
		})
	}
}

// TestDepartedOwnerKeepsNoOwnerRights: with a directory, an owner the directory does not list as
// ACTIVE can no longer register, update, submit, transfer or retire; admins still can.
func TestDepartedOwnerKeepsNoOwnerRights(t *testing.T) {
	dir := dirFunc(func(_, field, id string) error {
		if id == "team:support" && field == "caller" {
			return errs.InvalidArgument(field, field+": departed")
		}
		return nil
	})
	e := newRecordEnv(t, func(c *registry.Config) { c.Directory = dir })
	ctx := t.Context()
	a := e.registerWith(t, "departed", true, nil)
	id := a.GetAgentId()
	before := e.streamLen(t)
	_, err := e.svc.RegisterAgent(ctx, registry.RegisterAgent{Tenant: "acme", Agent: validAgent(t), RequestID: "new", RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindPermissionDenied, registry.ReasonCallerNotActive, "")
	_, err = e.update(t, id, []string{"purpose"}, ownerMD, "team:support", false, func(x *registryv1.Agent) { x.Purpose = "Mine still." })
	wantError(t, err, errs.KindPermissionDenied, registry.ReasonCallerNotActive, "")
	_, err = e.svc.SubmitAgent(ctx, registry.SubmitAgent{Tenant: "acme", AgentID: id, RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindPermissionDenied, registry.ReasonCallerNotActive, "")
	_, err = e.svc.TransferAgentOwnership(ctx, registry.TransferAgentOwnership{Tenant: "acme", AgentID: id, NewOwner: "bob@corp.example", Reason: "mine", RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindPermissionDenied, registry.ReasonCallerNotActive, "")
	_, err = e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "mine", RequireOwner: "team:support"}, ownerMD)
	wantError(t, err, errs.KindPermissionDenied, registry.ReasonCallerNotActive, "")
	if after := e.streamLen(t); after != before {
		t.Fatalf("a departed owner's commands wrote: stream %d → %d", before, after)
	}
	if _, err := e.update(t, id, []string{"purpose"}, admin, "", false, func(x *registryv1.Agent) { x.Purpose = "Taken over." }); err != nil {
		t.Fatalf("admin update: %v", err)
	}
}
