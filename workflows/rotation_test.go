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
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
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
	notes := &recordingNotifier{}
	f.acts.Notifier = notes
	in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	// The input's JWK is not trusted: a key planted there never reaches the client.
	planted := newJWK(t, "k2")
	in.NewKeyJWK = planted
	start := f.env.Now()
	var during []string
	f.env.RegisterDelayedCallback(func() { during = clientKeys(t, f, id) }, time.Hour)
	// The old key's tokens are revoked right after its removal from the client, before the registry
	// is asked to remove it (a registry that refuses cannot leave them alive).
	revokedFirst := false
	f.fakes.After("RemoveAgentKey", func() { revokedFirst = len(f.fakes.Requests("RevokeTokens")) == 1 })
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
	adds := workflowstest.RequestsOf[*issuerv1.AddClientKeyRequest](f.fakes, "AddClientKey")
	if len(adds) != 1 || adds[0].GetThumbprint() != in.NewKeyThumbprint || workflowstest.Thumbprint(adds[0].GetPublicJwk()) != in.NewKeyThumbprint ||
		slices.Contains(clientKeys(t, f, id), workflowstest.Thumbprint(planted)) {
		t.Fatalf("AddClientKey = %v, want the registered key by its thumbprint, not the input's", adds)
	}
	if !revokedFirst {
		t.Fatal("the registry was asked to remove the old key before its tokens were revoked")
	}
	if sent := notes.all(); len(sent) != 1 || sent[0].Kind != workflows.NotificationKeyAdded || sent[0].Recipient == "" ||
		sent[0].RecipientRole != workflows.HolderOwner || !strings.Contains(sent[0].Summary, in.NewKeyThumbprint) {
		t.Fatalf("notifications = %+v, want the owner told of the added key", sent)
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
		revs[0].GetRequestId() != workflows.BoundedRequestID(workflows.ClientKeyRevocationRequestID(id, oldTP)) {
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
		// dropped: the new key left the registry, so the run takes it off the client and revokes it.
		dropped bool
	}{
		{"suspended during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.State = registryv1.AgentState_AGENT_STATE_SUSPENDED }, true, false},
		{"retiring during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.State = registryv1.AgentState_AGENT_STATE_RETIRING }, true, false},
		{"new key removed during the overlap", registryv1.AgentState_AGENT_STATE_ACTIVE,
			func(a *registryv1.Agent) { a.Keys = a.Keys[:1] }, true, true},
		{"suspended before the run", registryv1.AgentState_AGENT_STATE_SUSPENDED, nil, false, false},
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
			quiet := []string{"RemoveAgentKey", "ResumeAgent", "ActivateAgent", "CreateClient"}
			if tc.dropped {
				rms := workflowstest.RequestsOf[*issuerv1.RemoveClientKeyRequest](f.fakes, "RemoveClientKey")
				revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
				if len(rms) != 1 || rms[0].GetThumbprint() != in.NewKeyThumbprint || len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != in.NewKeyThumbprint {
					t.Fatalf("RemoveClientKey %v, RevokeTokens %v: want only the dropped new key taken off the client and revoked", rms, revs)
				}
				if got := clientKeys(t, f, id); !slices.Equal(got, []string{oldTP}) {
					t.Fatalf("client keys = %v, want only the old key (no orphan)", got)
				}
			} else {
				quiet = append(quiet, "RemoveClientKey", "RevokeTokens")
			}
			for _, m := range quiet {
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

// newJWK returns a fresh EC P-256 public key as one JWK with kid.
func newJWK(t *testing.T, kid string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRotationWorkflowKeepsNewerKeys: a key added after the rotation's new key (a later rotation) is
// neither taken off the client nor out of the registry when the overlap ends; only the older key goes.
func TestRotationWorkflowKeepsNewerKeys(t *testing.T) {
	const id = "n1"
	f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
	in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	newer := newJWK(t, "k3")
	newerTP := workflowstest.Thumbprint(newer)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := f.fakes.Registry.Agent(in.Agent)
	a.PublicJwks = strings.TrimSuffix(a.GetPublicJwks(), "]}") + "," + newer + "]}"
	a.Keys = []*registryv1.AgentKey{
		{Kid: "k1", Thumbprint: oldTP, AddTime: timestamppb.New(base)},
		{Kid: "k2", Thumbprint: in.NewKeyThumbprint, AddTime: timestamppb.New(base.Add(time.Hour))},
		{Kid: "k3", Thumbprint: newerTP, AddTime: timestamppb.New(base.Add(2 * time.Hour))},
	}
	f.fakes.Registry.Put(a)
	// The newer key's own rotation reaches the client during the overlap.
	f.env.RegisterDelayedCallback(func() {
		c := f.fakes.Issuer.Client("tenants/" + tenant + "/clients/" + id)
		c.PublicJwks = strings.TrimSuffix(c.GetPublicJwks(), "]}") + "," + newer + "]}"
		f.fakes.Issuer.Put(c)
	}, time.Hour)
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	var res workflows.RotationResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Result != workflows.ResultRotated || !slices.Equal(res.RemovedKeys, []string{oldTP}) {
		t.Fatalf("result = %+v, want only the older key removed", res)
	}
	want := []string{in.NewKeyThumbprint, newerTP}
	slices.Sort(want)
	if got := clientKeys(t, f, id); !slices.Equal(got, want) {
		t.Fatalf("client keys = %v, want the new and the newer key %v", got, want)
	}
	var left []string
	for _, k := range f.fakes.Registry.Agent(in.Agent).GetKeys() {
		left = append(left, k.GetThumbprint())
	}
	slices.Sort(left)
	if !slices.Equal(left, want) {
		t.Fatalf("registry keys = %v, want %v", left, want)
	}
	for _, r := range workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens") {
		if r.GetClientKey().GetThumbprint() != oldTP {
			t.Fatalf("revoked the tokens of %s", r.GetClientKey().GetThumbprint())
		}
	}
}

// TestRotationWorkflowNewKeyGoneAfterAdd: the new key is removed from the registry while it is being
// added to the client (its key-removal run found nothing there yet): the run takes it off the client
// and revokes its tokens at once, and the old key stays.
func TestRotationWorkflowNewKeyGoneAfterAdd(t *testing.T) {
	const id = "g1"
	f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
	in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	f.fakes.After("AddClientKey", func() {
		a := f.fakes.Registry.Agent(in.Agent)
		a.Keys = a.Keys[:1]
		f.fakes.Registry.Put(a)
	})
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	var res workflows.RotationResult
	if err := f.env.GetWorkflowResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Result != workflows.ResultStopped || len(res.RemovedKeys) != 0 || len(res.Revocations) != 1 {
		t.Fatalf("result = %+v, want stopped with the new key's tokens revoked", res)
	}
	if got := clientKeys(t, f, id); !slices.Equal(got, []string{oldTP}) {
		t.Fatalf("client keys = %v, want only the old key", got)
	}
	revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
	if len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != in.NewKeyThumbprint {
		t.Fatalf("RevokeTokens = %v", revs)
	}
}

// TestRotationWorkflowRevokesBeforeRegistryFails: the registry refuses to remove the old key (a
// non-retryable error): the run fails, but the key is already off the client and its tokens revoked.
func TestRotationWorkflowRevokesBeforeRegistryFails(t *testing.T) {
	const id = "f1"
	f := newFixture(t, workflows.RotationWorkflowID(tenant, id, "x"))
	in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
	f.fakes.FailNext("RemoveAgentKey", errs.FailedPrecondition("AGENT_CHANGED", "refused for the test"))
	f.env.ExecuteWorkflow(workflows.RotationWorkflow, in)
	if err := f.env.GetWorkflowError(); err == nil {
		t.Fatal("the run ended well although the registry refused the removal")
	}
	if got := clientKeys(t, f, id); !slices.Equal(got, []string{in.NewKeyThumbprint}) {
		t.Fatalf("client keys = %v, want only the new key", got)
	}
	revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
	if len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != oldTP {
		t.Fatalf("RevokeTokens = %v, want the old key's tokens revoked", revs)
	}
}

// TestKeyRemovalWorkflow: a key removed in the registry leaves the client and its tokens are revoked
// (one CLIENT_KEY revocation under the key's own request id, the one a rotation uses too); a client
// that refuses the removal (its last key) still gets the key's tokens revoked and the run fails.
func TestKeyRemovalWorkflow(t *testing.T) {
	t.Run("removed", func(t *testing.T) {
		const id = "x1"
		f := newFixture(t, workflows.KeyRemovalWorkflowID(tenant, id, "x"))
		in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
		c := f.fakes.Issuer.Client("tenants/" + tenant + "/clients/" + id)
		c.PublicJwks = strings.TrimSuffix(c.GetPublicJwks(), "]}") + "," + newJWKOf(t, f, in) + "]}"
		f.fakes.Issuer.Put(c)
		f.env.ExecuteWorkflow(workflows.KeyRemovalWorkflow, workflows.KeyRemovalInput{
			Tenant: tenant, Agent: in.Agent, AgentID: id, Thumbprint: oldTP, Reason: "leaked", EventID: "ev-key-removed",
		})
		var res workflows.KeyRemovalResult
		if err := f.env.GetWorkflowResult(&res); err != nil {
			t.Fatal(err)
		}
		if got := clientKeys(t, f, id); !slices.Equal(got, []string{in.NewKeyThumbprint}) {
			t.Fatalf("client keys = %v, want the removed key gone", got)
		}
		revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
		if len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != oldTP ||
			revs[0].GetRequestId() != workflows.BoundedRequestID(workflows.ClientKeyRevocationRequestID(id, oldTP)) || res.Revocation == "" {
			t.Fatalf("RevokeTokens = %v, result %+v", revs, res)
		}
	})
	t.Run("last key refused", func(t *testing.T) {
		const id = "x2"
		f := newFixture(t, workflows.KeyRemovalWorkflowID(tenant, id, "x"))
		in, oldTP := rotationSetup(t, f, id, registryv1.AgentState_AGENT_STATE_ACTIVE)
		f.fakes.FailNext("RemoveClientKey", errs.FailedPrecondition("LAST_KEY", "the client's only key cannot be removed"))
		f.env.ExecuteWorkflow(workflows.KeyRemovalWorkflow, workflows.KeyRemovalInput{
			Tenant: tenant, Agent: in.Agent, AgentID: id, Thumbprint: oldTP,
		})
		if err := f.env.GetWorkflowError(); err == nil {
			t.Fatal("a refused removal ended well")
		}
		revs := workflowstest.RequestsOf[*issuerv1.RevokeTokensRequest](f.fakes, "RevokeTokens")
		if len(revs) != 1 || revs[0].GetClientKey().GetThumbprint() != oldTP {
			t.Fatalf("RevokeTokens = %v, want the key's tokens revoked anyway", revs)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		if err := (workflows.KeyRemovalInput{Tenant: tenant, Agent: "tenants/acme/agents/x3", AgentID: "x3"}).Validate(); err == nil {
			t.Fatal("Validate accepted input without a thumbprint")
		}
	})
}

// newJWKOf is the rotation input's new key as the registry holds it.
func newJWKOf(t *testing.T, f *fixture, in workflows.RotationInput) string {
	t.Helper()
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(f.fakes.Registry.Agent(in.Agent).GetPublicJwks()), &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if workflowstest.Thumbprint(string(k)) == in.NewKeyThumbprint {
			return string(k)
		}
	}
	t.Fatal("the new key is not registered")
	return ""
}
