package workflows_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// rotationSetup stores an ACTIVE agent holding its registration key and a new key (as after
// agent.key_added) and its client with the registration key only; it returns the input of the
// rotation run and the old key's thumbprint.
func rotationSetup(t *testing.T, f *fixture, id string, state registryv1.AgentState) (workflows.RotationInput, string) {
	t.Helper()
	a := workflowstest.NewAgent(tenant, id, registryv1.RiskTier_RISK_TIER_MODERATE)
	a.State = state
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(a.GetPublicJwks()), &set); err != nil {
		t.Fatal(err)
	}
	oldJWK := string(set.Keys[0])
	oldTP := workflowstest.Thumbprint(oldJWK)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k2", Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	newJWK, newTP := string(b), workflowstest.Thumbprint(string(b))
	a.PublicJwks = `{"keys":[` + oldJWK + `,` + newJWK + `]}`
	a.Keys = []*registryv1.AgentKey{{Kid: "k1", Thumbprint: oldTP}, {Kid: "k2", Thumbprint: newTP}}
	f.fakes.Registry.Put(a)
	f.fakes.Issuer.Put(&issuerv1.Client{
		Name: "tenants/" + tenant + "/clients/" + id, ClientId: id, Tenant: tenant, Agent: a.GetName(),
		PublicJwks: `{"keys":[` + oldJWK + `]}`, State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
	})
	return workflows.RotationInput{
		Tenant: tenant, Agent: a.GetName(), AgentID: id, NewKeyJWK: newJWK, NewKeyThumbprint: newTP,
		Overlap: 2 * time.Hour, EventID: "ev-key-added",
	}, oldTP
}

// clientKeys returns the thumbprints of the fake client's keys.
func clientKeys(t *testing.T, f *fixture, id string) []string {
	t.Helper()
	c := f.fakes.Issuer.Client("tenants/" + tenant + "/clients/" + id)
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(c.GetPublicJwks()), &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, workflowstest.Thumbprint(string(k)))
	}
	slices.Sort(out)
	return out
}

// keyRotated returns the lifecycle.key_rotated events recorded for the agent.
func keyRotated(t *testing.T, f *fixture, id string) []*lifecyclev1.KeyRotated {
	t.Helper()
	var out []*lifecyclev1.KeyRotated
	for _, e := range f.events(t, id) {
		if e.Type != workflows.EventKeyRotated {
			continue
		}
		m, err := eventstore.DecodeAs[*lifecyclev1.KeyRotated](e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestRotationWorkflowRotates: the new key is on the client during the whole overlap next to the old
// one; when the overlap ends the old key leaves the client and the registry, exactly its tokens are
// revoked (one CLIENT_KEY revocation by its thumbprint, nothing by agent or client), and the rotation
// is recorded.
func TestRotationWorkflowRotates(t *testing.T) {
	const id = "r1"
	wfID := workflows.RotationWorkflowID(tenant, id, "x")
	f := newFixture(t, wfID)
	in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	start := f.env.Now()
	var during []string
	f.env.RegisterDelayedCallback(func() { during = clientKeys(t, f, id) }, time.Hour)
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	var res workflows.RotationResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	both := []string{oldTP, in.NewKeyThumbprint}
	slices.Sort(both)
	if !slices.Equal(during, both) {
		t.Fatalf("client keys during the overlap = %v, want both %v", during, both)
	}
	if f.env.Now().Sub(start) < in.Overlap {
		t.Fatalf("the run ended %s after its start, before the overlap of %s", f.env.Now().Sub(start), in.Overlap)
	}
	if res.Result != workflows.ResultRotated || !slices.Equal(res.RemovedKeys, []string{oldTP}) || len(res.Revocations) != 1 {
		t.Fatalf("result = %+v", res)
	}
	if got := clientKeys(t, f, id); !slices.Equal(got, []string{in.NewKeyThumbprint}) {
		t.Fatalf("client keys after = %v, want only the new key", got)
	}
	a := f.fakes.Registry.Agent(in.Agent)
	if len(a.GetKeys()) != 1 || a.GetKeys()[0].GetThumbprint() != in.NewKeyThumbprint || strings.Contains(a.GetPublicJwks(), `"k1"`) {
		t.Fatalf("registry keys after = %v %s", a.GetKeys(), a.GetPublicJwks())
	}
	revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
	if len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != oldTP || revs[0].GetClientKey().GetClient() != "tenants/acme/clients/"+id ||
		revs[0].GetRequestId() != wfID+"/revoke-"+oldTP {
		t.Fatalf("RevokeTokens = %v, want one revocation of the old key's tokens", revs)
	}
	if n := len(f.fakes.Requests("DisableClient")) + len(f.fakes.Requests("SuspendAgent")); n != 0 {
		t.Fatalf("the rotation disabled or suspended something (%d calls)", n)
	}
	recs := keyRotated(t, f, id)
	if len(recs) != 1 || recs[0].GetOutcome() != workflows.ResultRotated || recs[0].GetOldKeyThumbprint() != oldTP ||
		recs[0].GetNewKeyThumbprint() != in.NewKeyThumbprint || recs[0].GetWorkflowId() != wfID || recs[0].GetOverlapEndTime() == nil {
		t.Fatalf("key_rotated = %v", recs)
	}
}

// TestRotationWorkflowStops: an agent suspended (or retiring) during the overlap, or before the run,
// or whose new key was removed meanwhile, stops the rotation: no key is removed, nothing revoked,
// nothing resumed or re-enabled, and the stop is recorded.
func TestRotationWorkflowStops(t *testing.T) {
	tests := []struct {
		name       string
		startState registryv1.AgentState
		meanwhile  func(a *registryv1.Agent)
		wantAdd    bool
	}{
		{"suspended during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.State = registryv1.AgentState_AGENT_STATE_SUSPENDED }, true},
		{"retiring during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.State = registryv1.AgentState_AGENT_STATE_RETIRING }, true},
		{"new key removed during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.Keys = a.Keys[:1] }, true},
		{"suspended before the run", registryv1.AgentState_AGENT_STATE_SUSPENDED, nil, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "s" + string(rune('1'+i))
			f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
			in, oldTP := rotationSetup(t, f, id, tc.startState)
			if tc.meanwhile != nil {
				f.env.RegisterDelayedCallback(func() {
					a := f.fakes.Registry.Agent(in.Agent)
					tc.meanwhile(a)
					f.fakes.Registry.Put(a)
				}, time.Hour)
			}
			f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
			var res workflows.RotationResult
			if err := f.env.GetWorkflowResult(&res); err != nil {
				t.Fatal(err)
			}
			if res.Result != workflows.ResultStopped || len(res.RemovedKeys) != 0 || res.Detail == "" {
				t.Fatalf("result = %+v, want stopped", res)
			}
			if got := len(f.fakes.Requests("AddClientKey")) > 0; got != tc.wantAdd {
				t.Fatalf("AddClientKey called = %v, want %v", got, tc.wantAdd)
			}
			for _, m := range []string{"RemoveClientKey", "RemoveAgentKey", "RevokeTokens", "ResumeAgent", "ActivateAgent", "CreateClient"} {
				if n := len(f.fakes.Requests(m)); n != 0 {
					t.Fatalf("%s called %d times by a stopped rotation", m, n)
				}
			}
			if !slices.Contains(clientKeys(t, f, id), oldTP) {
				t.Fatal("the old key left the client of a stopped rotation")
			}
			if recs := keyRotated(t, f, id); len(recs) != 1 || recs[0].GetOutcome() != workflows.ResultStopped {
				t.Fatalf("key_rotated = %v, want one stopped record", recs)
			}
		})
	}
}

// TestRotationWorkflowDefaultOverlapAndBadInput: no overlap means 24 hours; input without the new
// key fails the run at once with nothing called.
func TestRotationWorkflowDefaultOverlapAndBadInput(t *testing.T) {
	f := newFixture(t, workflows.RotationWorkflowID(tenant, "d1", "x"))
	in, _ := rotationSetup(t, f, "d1", registryv1.AgentState_AGENT_STATE_ACTIVE)
	in.Overlap = 0
	start := f.env.Now()
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	if err := f.env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if d := f.env.Now().Sub(start); d < workflows.DefaultRotationOverlap {
		t.Fatalf("overlap %s, want the default %s", d, workflows.DefaultRotationOverlap)
	}

	g := newFixture(t, workflows.RotationWorkflowID(tenant, "d2", "x"))
	bad, _ := rotationSetup(t, g, "d2", registryv1.AgentState_AGENT_STATE_ACTIVE)
	bad.NewKeyThumbprint = ""
	if err := bad.Validate(); err == nil {
		t.Fatal("Validate accepted input without the new key's thumbprint")
	}
	g.env.ExecuteWorkflow(workflows.RotationWorkflow, bad)
	if err := g.env.GetWorkflowError(); err == nil {
		t.Fatal("a rotation without the new key's thumbprint ran")
	}
	if n := len(g.fakes.Requests("AddClientKey")) + len(g.fakes.Requests("GetAgent")); n != 0 {
		t.Fatalf("a refused rotation called the services %d times", n)
	}
}
