package registry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// admitFunc is an Admission from a function.
type admitFunc func(ctx context.Context, tenant string, before, after *registryv1.Agent) (*registryv1.Classification, error)

func (f admitFunc) AdmitUpdate(ctx context.Context, tenant string, before, after *registryv1.Agent) (*registryv1.Classification, error) {
	return f(ctx, tenant, before, after)
}

// dirFunc is a Directory from a function.
type dirFunc func(tenant, field, id string) error

func (f dirFunc) CheckPrincipal(tenant, field, id string) error { return f(tenant, field, id) }

// recordEnv is a registry service with a settable clock (and the Config edit of the test) over an
// embedded NATS server, with tenant acme.
type recordEnv struct {
	*env
	clock *clock
}

func newRecordEnv(t *testing.T, edit func(*registry.Config)) *recordEnv {
	t.Helper()
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/registry"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := &clock{now: time.Now().UTC()}
	cfg := registry.Config{Store: store, Now: c.Now}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, svc.Runners()...)
	ctx, cancel := context.WithTimeout(t.Context(), testkit.DefaultWait)
	defer cancel()
	if err := svc.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	e := &recordEnv{env: &env{store: store, svc: svc}, clock: c}
	e.createTenant(t, "acme")
	return e
}

// streamLen is the number of events in the AGENTS stream.
func (e *recordEnv) streamLen(t *testing.T) uint64 {
	t.Helper()
	return testkit.StreamMessages(t, e.store.JetStream(), eventstore.StreamAgents)
}

// registerWith registers validAgent edited by edit.
func (e *recordEnv) registerWith(t *testing.T, requestID string, proposed bool, edit func(*registryv1.Agent)) *registryv1.Agent {
	t.Helper()
	in := validAgent(t)
	if edit != nil {
		edit(in)
	}
	a, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: requestID, Proposed: proposed}, admin)
	if err != nil {
		t.Fatalf("register %s: %v", requestID, err)
	}
	return a
}

// wantMessage checks that err's caller-visible message starts with prefix.
func wantMessage(t *testing.T, err error, prefix string) {
	t.Helper()
	e, ok := asErr(err)
	if !ok || !strings.HasPrefix(e.Message, prefix) {
		t.Fatalf("error %v: want a message starting %q", err, prefix)
	}
}

func TestRegisterWholeRecordClassifiesAndPointsAtHistory(t *testing.T) {
	e := newRecordEnv(t, nil)
	a := e.registerWith(t, "r1", false, func(a *registryv1.Agent) {
		a.Function = "finance"
		a.Environment = registryv1.Environment_ENVIRONMENT_PROD
		a.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL
		a.Roles = []string{"ledger-reader"}
		a.CredentialType = registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP
		a.Labels = map[string]string{"team": "payments"}
		a.DecommissionCriteria = "when the ledger migration ends"
		a.Dependencies = []*registryv1.Dependency{{Kind: "queue", Uri: "nats://nats.internal/ledger"}}
	})
	if a.GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("state %s", a.GetState())
	}
	want := &registryv1.Classification{
		Function: "finance", DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL,
		Environment: registryv1.Environment_ENVIRONMENT_PROD, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
		Exposure: registryv1.Exposure_EXPOSURE_INTERNAL, DerivedRiskTier: registryv1.RiskTier_RISK_TIER_HIGH,
		Rule: "finance function in PROD → HIGH",
	}
	if !proto.Equal(a.GetClassification(), want) || a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH {
		t.Fatalf("classification %v tier %s, want %v HIGH", a.GetClassification(), a.GetRiskTier(), want)
	}
	if a.GetAuditRef() != a.GetName()+"/history" {
		t.Fatalf("audit_ref %q", a.GetAuditRef())
	}
	if a.GetFunction() != "finance" || !slices.Equal(a.GetRoles(), []string{"ledger-reader"}) || a.GetLabels()["team"] != "payments" ||
		a.GetCredentialType() != registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP || len(a.GetDependencies()) != 1 ||
		a.GetDecommissionCriteria() == "" {
		t.Fatalf("fields not stored: %v", a)
	}
	got, err := e.svc.GetAgent(t.Context(), "acme", a.GetAgentId(), 0)
	if err != nil || !proto.Equal(got, a) {
		t.Fatalf("read model %v (%v), want %v", got, err, a)
	}
}

func TestRegisterWithoutSponsorNamesTheFieldInTheMessage(t *testing.T) {
	e := newRecordEnv(t, nil)
	before := e.streamLen(t)
	in := validAgent(t)
	in.Sponsor = ""
	_, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: "ns"}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "agent.sponsor")
	wantMessage(t, err, "agent.sponsor: is required")
	if after := e.streamLen(t); after != before {
		t.Fatalf("stream grew from %d to %d", before, after)
	}
}

func TestRegisterValidateOnlyWritesNothing(t *testing.T) {
	e := newRecordEnv(t, nil)
	before := e.streamLen(t)
	in := validAgent(t)
	in.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
	a, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: "vo", ValidateOnly: true}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || a.GetState() != registryv1.AgentState_AGENT_STATE_PENDING ||
		a.GetEtag() != "" || a.GetName() == "" || a.GetClassification().GetRule() != "PII data → HIGH" {
		t.Fatalf("preview %v", a)
	}
	if after := e.streamLen(t); after != before {
		t.Fatalf("validate_only wrote: stream %d → %d", before, after)
	}
	if _, err := e.svc.GetAgent(t.Context(), "acme", a.GetAgentId(), 0); !errs.Is(err, errs.KindNotFound) {
		t.Fatalf("validate_only agent readable: %v", err)
	}
	// A refusal in validate_only is the same refusal.
	in.Scopes = []string{"billing.admin"}
	_, err = e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: in, ValidateOnly: true}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "agent.scopes")
}

func TestRegisterChecksDirectory(t *testing.T) {
	e := newRecordEnv(t, func(c *registry.Config) {
		c.Directory = dirFunc(func(tenant, field, id string) error {
			if id == "ghost@corp.example" {
				return errs.InvalidArgument(field, field+": "+id+" is not an active principal of tenant "+tenant)
			}
			return nil
		})
	})
	before := e.streamLen(t)
	in := validAgent(t)
	in.Sponsor = "ghost@corp.example"
	_, err := e.svc.RegisterAgent(t.Context(), registry.RegisterAgent{Tenant: "acme", Agent: in, RequestID: "g"}, admin)
	wantError(t, err, errs.KindInvalidArgument, "", "agent.sponsor")
	if after := e.streamLen(t); after != before {
		t.Fatalf("stream grew from %d to %d", before, after)
	}
	e.registerWith(t, "ok", false, nil)
}

func TestProposedThenSubmitted(t *testing.T) {
	e := newRecordEnv(t, nil)
	a := e.registerWith(t, "p1", true, nil)
	if a.GetState() != registryv1.AgentState_AGENT_STATE_PROPOSED {
		t.Fatalf("state %s, want PROPOSED", a.GetState())
	}
	_, err := e.svc.ActivateAgent(t.Context(), registry.ActivateAgent{Tenant: "acme", AgentID: a.GetAgentId(), DecisionID: "d", ApprovedBy: "policy:auto"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_PROPOSED", "")
	_, err = e.svc.SubmitAgent(t.Context(), registry.SubmitAgent{Tenant: "acme", AgentID: a.GetAgentId(), Etag: "999"}, admin)
	wantError(t, err, errs.KindConflict, "ETAG_MISMATCH", "")
	s, err := e.svc.SubmitAgent(t.Context(), registry.SubmitAgent{Tenant: "acme", AgentID: a.GetAgentId(), Etag: a.GetEtag(), RequestID: "s1"}, admin)
	if err != nil || s.GetState() != registryv1.AgentState_AGENT_STATE_PENDING {
		t.Fatalf("submit: %v %v", s.GetState(), err)
	}
	n := e.streamLen(t)
	again, err := e.svc.SubmitAgent(t.Context(), registry.SubmitAgent{Tenant: "acme", AgentID: a.GetAgentId(), RequestID: "s1"}, admin)
	if err != nil || again.GetEtag() != s.GetEtag() || e.streamLen(t) != n {
		t.Fatalf("repeat submit: %v %v, stream %d → %d", again.GetEtag(), err, n, e.streamLen(t))
	}
	_, err = e.svc.SubmitAgent(t.Context(), registry.SubmitAgent{Tenant: "acme", AgentID: a.GetAgentId(), RequestID: "s2"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_PENDING", "")
	if got := e.eventTypes(t, "acme", a.GetAgentId()); !slices.Equal(got, []string{registry.EventAgentRegistered, registry.EventAgentSubmitted}) {
		t.Fatalf("events %v", got)
	}
}

func TestUpdateAgent(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	// PROPOSED: its changes need no admission (TestUpdatePendingEscalationNeedsAdmission).
	a := e.registerWith(t, "u1", true, nil)
	id := a.GetAgentId()
	upd := func(etag, reqID string, paths []string, edit func(*registryv1.Agent)) (*registryv1.Agent, []string, error) {
		in := proto.CloneOf(a)
		edit(in)
		return e.svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: id, Agent: in, Paths: paths, Etag: etag, RequestID: reqID, Reason: "test"}, admin)
	}
	purpose := func(x *registryv1.Agent) { x.Purpose = "Answers questions from the new FAQ." }

	t.Run("refusals write nothing", func(t *testing.T) {
		before := e.streamLen(t)
		for _, tc := range []struct {
			name   string
			etag   string
			paths  []string
			edit   func(*registryv1.Agent)
			kind   errs.Kind
			reason string
			prefix string
		}{
			{"no etag", "", []string{"purpose"}, purpose, errs.KindInvalidArgument, "", "etag: is required"},
			{"stale etag", "1000", []string{"purpose"}, purpose, errs.KindConflict, "ETAG_MISMATCH", ""},
			{"no mask", a.GetEtag(), nil, purpose, errs.KindInvalidArgument, "", "update_mask: is required"},
			{"output-only path", a.GetEtag(), []string{"state"}, purpose, errs.KindInvalidArgument, "", "update_mask: path \"state\""},
			{"keys path", a.GetEtag(), []string{"public_jwks"}, purpose, errs.KindInvalidArgument, "", "update_mask:"},
			{"bad label", a.GetEtag(), []string{"labels"}, func(x *registryv1.Agent) { x.Labels = map[string]string{"A": "b"} }, errs.KindInvalidArgument, "", "agent.labels:"},
			{"sponsor (transfer only)", a.GetEtag(), []string{"sponsor"}, func(x *registryv1.Agent) { x.Sponsor = "" }, errs.KindInvalidArgument, "", "update_mask: path \"sponsor\""},
			{"expire in the past", a.GetEtag(), []string{"expire_time"}, func(x *registryv1.Agent) {
				x.ExpireTime = timestamppb.New(e.clock.Now().Add(-time.Hour))
			}, errs.KindInvalidArgument, "", "agent.expire_time: must be in the future"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := upd(tc.etag, "r-"+strings.ReplaceAll(tc.name, " ", "-"), tc.paths, tc.edit)
				wantError(t, err, tc.kind, tc.reason, "")
				if tc.prefix != "" {
					wantMessage(t, err, tc.prefix)
				}
			})
		}
		if after := e.streamLen(t); after != before {
			t.Fatalf("stream %d → %d", before, after)
		}
	})

	t.Run("no-op writes nothing", func(t *testing.T) {
		before := e.streamLen(t)
		got, changed, err := upd(a.GetEtag(), "noop", []string{"purpose", "scopes"}, func(x *registryv1.Agent) { slices.Reverse(x.Scopes) })
		if err != nil || len(changed) != 0 || got.GetEtag() != a.GetEtag() || e.streamLen(t) != before {
			t.Fatalf("no-op: %v %v %v, stream %d → %d", got.GetEtag(), changed, err, before, e.streamLen(t))
		}
	})

	t.Run("validate only writes nothing", func(t *testing.T) {
		before := e.streamLen(t)
		in := proto.CloneOf(a)
		purpose(in)
		got, changed, err := e.svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: id, Agent: in, Paths: []string{"purpose"}, Etag: a.GetEtag(), ValidateOnly: true}, admin)
		if err != nil || !slices.Equal(changed, []string{"purpose"}) || got.GetPurpose() != in.GetPurpose() || e.streamLen(t) != before {
			t.Fatalf("validate_only: %v %v, stream %d → %d", changed, err, before, e.streamLen(t))
		}
		if cur, _ := e.svc.GetAgent(ctx, "acme", id, 0); cur.GetPurpose() == in.GetPurpose() {
			t.Fatal("validate_only changed the agent")
		}
	})

	t.Run("change reclassifies and repeats", func(t *testing.T) {
		got, changed, err := upd(a.GetEtag(), "pii", []string{"purpose", "data_sensitivity", "display_name"}, func(x *registryv1.Agent) {
			purpose(x)
			x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(changed, []string{"purpose", "data_sensitivity"}) {
			t.Fatalf("changed %v", changed)
		}
		if got.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || got.GetClassification().GetRule() != "PII data → HIGH" || got.GetEtag() == a.GetEtag() {
			t.Fatalf("after: tier %s rule %q etag %s", got.GetRiskTier(), got.GetClassification().GetRule(), got.GetEtag())
		}
		n := e.streamLen(t)
		again, changed2, err := upd(a.GetEtag(), "pii", []string{"purpose", "data_sensitivity"}, func(x *registryv1.Agent) {
			purpose(x)
			x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PII
		})
		if err != nil || again.GetEtag() != got.GetEtag() || !slices.Equal(changed2, changed) || e.streamLen(t) != n {
			t.Fatalf("repeat: %v %v %v, stream %d → %d", again.GetEtag(), changed2, err, n, e.streamLen(t))
		}
		read, err := e.svc.GetAgent(ctx, "acme", id, 0)
		if err != nil || !proto.Equal(read, got) {
			t.Fatalf("read model %v, want %v", read, got)
		}
		a = got
	})
}

func TestUpdateActiveAgentEscalationNeedsAdmission(t *testing.T) {
	var mu sync.Mutex
	var admitted []string
	var deny bool
	admission := admitFunc(func(_ context.Context, tenant string, before, after *registryv1.Agent) (*registryv1.Classification, error) {
		mu.Lock()
		defer mu.Unlock()
		if deny {
			return nil, errs.PermissionDenied("POLICY_DENIED", "policy denies: no payments")
		}
		admitted = append(admitted, tenant+" "+strings.Join(after.GetScopes(), ","))
		c := proto.CloneOf(after.GetClassification())
		c.OverrideRiskTier, c.OverrideReason, c.OverrideSource = registryv1.RiskTier_RISK_TIER_HIGH, "payments always HIGH", "bundle r1"
		return c, nil
	})
	for _, withAdmission := range []bool{false, true} {
		t.Run(fmt.Sprintf("admission=%v", withAdmission), func(t *testing.T) {
			e := newRecordEnv(t, func(c *registry.Config) {
				if withAdmission {
					c.Admission = admission
				}
			})
			ctx := t.Context()
			a := e.activeAgent(t, "acme", "act")
			update := func(paths []string, edit func(*registryv1.Agent)) (*registryv1.Agent, []string, error) {
				cur, err := e.svc.GetAgent(ctx, "acme", a.GetAgentId(), 0)
				if err != nil {
					t.Fatal(err)
				}
				in := proto.CloneOf(cur)
				edit(in)
				return e.svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: a.GetAgentId(), Agent: in, Paths: paths, Etag: cur.GetEtag()}, admin)
			}
			// Not escalations: removing a scope, relabelling.
			if _, _, err := update([]string{"scopes", "labels"}, func(x *registryv1.Agent) {
				x.Scopes = []string{"faq.read"}
				x.Labels = map[string]string{"tier": "gold"}
			}); err != nil {
				t.Fatalf("de-escalation refused: %v", err)
			}
			// Environment is immutable once ACTIVE.
			before := e.streamLen(t)
			_, _, err := update([]string{"environment"}, func(x *registryv1.Agent) { x.Environment = registryv1.Environment_ENVIRONMENT_PROD })
			wantError(t, err, errs.KindFailedPrecondition, registry.ReasonEnvironmentImmutable, "")
			escalations := []struct {
				name  string
				paths []string
				edit  func(*registryv1.Agent)
			}{
				{"add scope", []string{"scopes"}, func(x *registryv1.Agent) { x.Scopes = append(x.Scopes, "payment.initiate") }},
				{"add role", []string{"roles"}, func(x *registryv1.Agent) { x.Roles = []string{"ledger-reader"} }},
				{"raise tier", []string{"data_sensitivity"}, func(x *registryv1.Agent) {
					x.DataSensitivity = registryv1.DataSensitivity_DATA_SENSITIVITY_PHI
				}},
				{"credential type", []string{"credential_type"}, func(x *registryv1.Agent) {
					x.CredentialType = registryv1.CredentialType_CREDENTIAL_TYPE_PRIVATE_KEY_JWT_DPOP
				}},
			}
			if !withAdmission {
				for _, tc := range escalations {
					_, _, err := update(tc.paths, tc.edit)
					wantError(t, err, errs.KindFailedPrecondition, registry.ReasonAdmissionUnavailable, "")
				}
				if after := e.streamLen(t); after != before {
					t.Fatalf("refused escalations wrote: stream %d → %d", before, after)
				}
				return
			}
			mu.Lock()
			deny = true
			mu.Unlock()
			_, _, err = update(escalations[0].paths, escalations[0].edit)
			wantError(t, err, errs.KindPermissionDenied, "POLICY_DENIED", "")
			if after := e.streamLen(t); after != before {
				t.Fatalf("denied escalation wrote: stream %d → %d", before, after)
			}
			mu.Lock()
			deny = false
			mu.Unlock()
			got, changed, err := update(escalations[0].paths, escalations[0].edit)
			if err != nil || !slices.Equal(changed, []string{"scopes"}) {
				t.Fatalf("admitted escalation: %v %v", changed, err)
			}
			if got.GetRiskTier() != registryv1.RiskTier_RISK_TIER_HIGH || got.GetClassification().GetOverrideReason() != "payments always HIGH" ||
				got.GetClassification().GetDerivedRiskTier() != registryv1.RiskTier_RISK_TIER_MODERATE {
				t.Fatalf("override not recorded: %v tier %s", got.GetClassification(), got.GetRiskTier())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(admitted) != 1 || admitted[0] != "acme faq.read,payment.initiate" {
				t.Fatalf("admission saw %v", admitted)
			}
		})
	}
}

func TestExpireAgent(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	a := e.registerWith(t, "x1", false, func(a *registryv1.Agent) { a.ExpireTime = timestamppb.New(e.clock.Now().Add(time.Hour)) })
	none := e.registerWith(t, "x2", false, nil)
	before := e.streamLen(t)
	_, err := e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: a.GetAgentId()}, admin)
	wantError(t, err, errs.KindFailedPrecondition, registry.ReasonNotExpired, "")
	_, err = e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: none.GetAgentId()}, admin)
	wantError(t, err, errs.KindFailedPrecondition, registry.ReasonNotExpired, "")
	if after := e.streamLen(t); after != before {
		t.Fatalf("stream %d → %d", before, after)
	}
	e.clock.advance(time.Hour)
	got, err := e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: a.GetAgentId(), RequestID: "e1"}, admin)
	if err != nil || got.GetState() != registryv1.AgentState_AGENT_STATE_EXPIRED {
		t.Fatalf("expire: %v %v", got.GetState(), err)
	}
	_, err = e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: a.GetAgentId(), RequestID: "e2"}, admin)
	wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_EXPIRED", "")
	r, err := e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: a.GetAgentId(), Reason: "expired", Trigger: registry.TriggerTTL}, admin)
	if err != nil || r.GetState() != registryv1.AgentState_AGENT_STATE_RETIRING {
		t.Fatalf("retire from EXPIRED: %v %v", r.GetState(), err)
	}
}

// agentIn returns a new agent of tenant acme in state st (expire_time an hour ahead).
func (e *recordEnv) agentIn(t *testing.T, st registryv1.AgentState, id string) *registryv1.Agent {
	t.Helper()
	ctx := t.Context()
	a := e.registerWith(t, id, st == registryv1.AgentState_AGENT_STATE_PROPOSED, func(a *registryv1.Agent) {
		a.ExpireTime = timestamppb.New(e.clock.Now().Add(time.Hour))
	})
	aid := a.GetAgentId()
	must := func(_ *registryv1.Agent, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("to %s: %v", st, err)
		}
	}
	activate := func() {
		must(e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: aid, DecisionID: "d0", ApprovedBy: "policy:auto"}, admin))
	}
	switch st {
	case registryv1.AgentState_AGENT_STATE_ACTIVE:
		activate()
	case registryv1.AgentState_AGENT_STATE_SUSPENDED:
		activate()
		must(e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: aid, Reason: "test"}, admin))
	case registryv1.AgentState_AGENT_STATE_RETIRING:
		must(e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: aid, Reason: "test"}, admin))
	case registryv1.AgentState_AGENT_STATE_RETIRED:
		must(e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: aid, Reason: "test"}, admin))
		must(e.svc.CompleteRetirement(ctx, registry.CompleteRetirement{Tenant: "acme", AgentID: aid}, admin))
	case registryv1.AgentState_AGENT_STATE_REJECTED:
		must(e.svc.RejectAgent(ctx, registry.RejectAgent{Tenant: "acme", AgentID: aid, DecisionID: "d0", Reason: "test"}, admin))
	case registryv1.AgentState_AGENT_STATE_EXPIRED:
		e.clock.advance(time.Hour)
		must(e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: aid}, admin))
	}
	got, err := e.svc.GetAgent(ctx, "acme", aid, 0)
	if err != nil || got.GetState() != st {
		t.Fatalf("agent in %s: got %s (%v)", st, got.GetState(), err)
	}
	return got
}

// TestStateMachineEveryCommandInEveryState runs every command on an agent in every state: a command
// the table does not allow is FailedPrecondition AGENT_STATE_<state> and writes nothing; an allowed
// one is never refused for the state.
func TestStateMachineEveryCommandInEveryState(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	// Commands that answer an agent already as asked with no change, whatever the table says.
	noop := map[string]bool{
		"SUSPENDED/" + string(registry.CmdSuspend): true,
	}
	run := func(cmd registry.Command, a *registryv1.Agent) error {
		id := a.GetAgentId()
		var err error
		switch cmd {
		case registry.CmdSubmit:
			_, err = e.svc.SubmitAgent(ctx, registry.SubmitAgent{Tenant: "acme", AgentID: id}, admin)
		case registry.CmdActivate:
			_, err = e.svc.ActivateAgent(ctx, registry.ActivateAgent{Tenant: "acme", AgentID: id, DecisionID: "d-other", ApprovedBy: "policy:auto"}, admin)
		case registry.CmdReject:
			_, err = e.svc.RejectAgent(ctx, registry.RejectAgent{Tenant: "acme", AgentID: id, DecisionID: "d-other", Reason: "no"}, admin)
		case registry.CmdRetire:
			_, err = e.svc.RetireAgent(ctx, registry.RetireAgent{Tenant: "acme", AgentID: id, Reason: "done"}, admin)
		case registry.CmdCompleteRetirement:
			_, err = e.svc.CompleteRetirement(ctx, registry.CompleteRetirement{Tenant: "acme", AgentID: id}, admin)
		case registry.CmdSuspend:
			_, err = e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: id, Reason: "incident"}, admin)
		case registry.CmdResume:
			_, err = e.svc.ResumeAgent(ctx, registry.ResumeAgent{Tenant: "acme", AgentID: id, Reason: "fixed"}, admin)
		case registry.CmdExpire:
			_, err = e.svc.ExpireAgent(ctx, registry.ExpireAgent{Tenant: "acme", AgentID: id}, admin)
		case registry.CmdUpdate:
			in := proto.CloneOf(a)
			in.DisplayName = "renamed"
			_, _, err = e.svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: id, Agent: in, Paths: []string{"display_name"}, Etag: a.GetEtag()}, admin)
		case registry.CmdAddKey:
			pub, _ := ed25519Key(t)
			b, merr := (jose.JSONWebKey{Key: pub, KeyID: "k2", Algorithm: "EdDSA"}).MarshalJSON()
			if merr != nil {
				t.Fatal(merr)
			}
			_, _, err = e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: id, PublicJWK: string(b)}, admin)
		case registry.CmdRemoveKey:
			_, err = e.svc.RemoveAgentKey(ctx, registry.RemoveAgentKey{Tenant: "acme", AgentID: id, Thumbprint: a.GetKeys()[0].GetThumbprint(), Reason: "rotated"}, admin)
		case registry.CmdRemoveScopes:
			_, err = e.svc.RemoveAgentScopes(ctx, registry.RemoveAgentScopes{Tenant: "acme", AgentID: id, Scopes: []string{"faq.read"}, Reason: "review"}, admin)
		case registry.CmdTransferOwnership:
			_, err = e.svc.TransferAgentOwnership(ctx, registry.TransferAgentOwnership{Tenant: "acme", AgentID: id, NewOwner: "team:other", Reason: "reorg"}, admin)
		default:
			t.Fatalf("command %q has no case in this test", cmd)
		}
		return err
	}
	n := 0
	for _, st := range registry.AllStates {
		for _, cmd := range registry.Commands() {
			name := strings.TrimPrefix(st.String(), "AGENT_STATE_") + "/" + string(cmd)
			t.Run(name, func(t *testing.T) {
				n++
				a := e.agentIn(t, st, fmt.Sprintf("sm-%d", n))
				before := e.streamLen(t)
				err := run(cmd, a)
				stateRefusal := false
				if ee, ok := asErr(err); ok && ee.Kind == errs.KindFailedPrecondition && strings.HasPrefix(ee.Reason, "AGENT_STATE_") {
					stateRefusal = true
				}
				switch {
				case noop[name]:
					if err != nil || e.streamLen(t) != before {
						t.Fatalf("no-op: %v, stream %d → %d", err, before, e.streamLen(t))
					}
				case registry.Allowed(cmd, st):
					if stateRefusal {
						t.Fatalf("allowed command refused for the state: %v", err)
					}
				default:
					wantError(t, err, errs.KindFailedPrecondition, "AGENT_STATE_"+strings.TrimPrefix(st.String(), "AGENT_STATE_"), "")
					if after := e.streamLen(t); after != before {
						t.Fatalf("forbidden command wrote: stream %d → %d", before, after)
					}
				}
			})
		}
	}
}

func TestAgentHistory(t *testing.T) {
	e := newRecordEnv(t, nil)
	ctx := t.Context()
	a := e.registerWith(t, "h1", true, nil)
	id := a.GetAgentId()
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: "bob@corp.example", Kind: eventstore.ActorHuman}, CorrelationID: "change-42"}
	s, err := e.svc.SubmitAgent(ctx, registry.SubmitAgent{Tenant: "acme", AgentID: id, RequestID: "sub-1"}, md)
	if err != nil {
		t.Fatal(err)
	}
	in := proto.CloneOf(s)
	in.Labels = map[string]string{"team": "support"}
	if _, _, err := e.svc.UpdateAgent(ctx, registry.UpdateAgent{Tenant: "acme", AgentID: id, Agent: in, Paths: []string{"labels"}, Etag: s.GetEtag(), RequestID: "upd-1", Reason: "tagging"}, md); err != nil {
		t.Fatal(err)
	}
	entries, next, err := e.svc.GetAgentHistory(ctx, "acme", id, 0, "")
	if err != nil || next != "" || len(entries) != 3 {
		t.Fatalf("history: %d entries, next %q, %v", len(entries), next, err)
	}
	wantTypes := []string{registry.EventAgentRegistered, registry.EventAgentSubmitted, registry.EventAgentUpdated}
	for i, en := range entries {
		if en.GetEventType() != wantTypes[i] || en.GetEventId() == "" || en.GetTime() == nil || en.GetData() == nil || en.GetSummary() == "" {
			t.Fatalf("entry %d: %v", i, en)
		}
		if i > 0 && en.GetVersion() <= entries[i-1].GetVersion() {
			t.Fatalf("versions not increasing: %v", entries)
		}
	}
	up := entries[2]
	if up.GetActor() != "bob@corp.example" || up.GetActorKind() != "human" || up.GetRequestId() != "upd-1" || up.GetCorrelationId() != "change-42" ||
		!slices.Equal(up.GetChangedFields(), []string{"labels"}) || !strings.Contains(up.GetSummary(), "tagging") ||
		up.GetData().GetFields()["changed_fields"].GetListValue().GetValues()[0].GetStringValue() != "labels" {
		t.Fatalf("update entry %v", up)
	}
	cur, _ := e.svc.GetAgent(ctx, "acme", id, 0)
	if fmt.Sprint(up.GetVersion()) != cur.GetEtag() {
		t.Fatalf("last version %d, etag %s", up.GetVersion(), cur.GetEtag())
	}
	// Paging: one entry at a time gives the same timeline.
	var paged []string
	tok := ""
	for range 10 {
		page, nxt, err := e.svc.GetAgentHistory(ctx, "acme", id, 1, tok)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range page {
			paged = append(paged, en.GetEventType())
		}
		if tok = nxt; tok == "" {
			break
		}
	}
	if !slices.Equal(paged, wantTypes) {
		t.Fatalf("paged %v", paged)
	}
	if _, _, err := e.svc.GetAgentHistory(ctx, "acme", registry.DeriveAgentID("acme", "nope"), 0, ""); !errs.Is(err, errs.KindNotFound) {
		t.Fatalf("missing agent: %v", err)
	}
	if _, _, err := e.svc.GetAgentHistory(ctx, "acme", id, 0, "garbage!"); !errs.Is(err, errs.KindInvalidArgument) {
		t.Fatalf("bad token: %v", err)
	}
}

// asErr returns err as an *errs.Error.
func asErr(err error) (*errs.Error, bool) {
	var e *errs.Error
	ok := errors.As(err, &e)
	return e, ok
}
