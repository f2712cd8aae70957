package manifest_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/cmd/internal/manifest"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func TestDiffNamesTheChangedFieldsOnly(t *testing.T) {
	dir := writeSet(t, map[string]string{"a.yaml": doc("faq-bot")})
	set, probs := load(t, dir)
	if probs != nil {
		t.Fatal(probs)
	}
	m := set.Manifests[0]
	created := now.Add(-48 * time.Hour)
	// The registry's copy: registered two days ago (TTL counted from then, a few seconds after the
	// time agentctl sent), scopes in another order, credential type left unset.
	current := m.Agent("acme", "support", nil, created.Add(-3*time.Second))
	current.CreateTime = timestamppb.New(created)
	current.Scopes = []string{"tickets.read", "faq.read"}
	current.CredentialType = registryv1.CredentialType_CREDENTIAL_TYPE_UNSPECIFIED
	current.State = registryv1.AgentState_AGENT_STATE_ACTIVE

	desired := m.Agent("acme", "support", current, now)
	if d := manifest.Diff(desired, current); len(d) != 0 {
		t.Fatalf("an unchanged manifest differs: %+v", d)
	}
	if manifest.KeysDiffer(desired, current) {
		t.Fatal("the same key differs")
	}

	changed := proto.Clone(current).(*registryv1.Agent)
	changed.Purpose = "Something else."
	changed.Labels = map[string]string{"team": "other"}
	changed.Scopes = []string{"faq.read"}
	changed.PublicJwks = strings.Replace(jwks, "hCSa", "XiIC", 1)
	d := manifest.Diff(desired, changed)
	if got := strings.Join(manifest.Paths(d), ","); got != "purpose,scopes,labels" {
		t.Fatalf("changed paths %s, want purpose,scopes,labels", got)
	}
	if d[1].From != "[faq.read]" || d[1].To != "[faq.read,tickets.read]" {
		t.Errorf("scopes change %+v", d[1])
	}
	if !manifest.KeysDiffer(desired, changed) {
		t.Error("a key the agent does not hold is no difference")
	}

	// An expiry further off than the TTL's slack is a change.
	far := proto.Clone(current).(*registryv1.Agent)
	far.ExpireTime = timestamppb.New(far.GetExpireTime().AsTime().Add(time.Hour))
	if got := strings.Join(manifest.Paths(manifest.Diff(m.Agent("acme", "support", far, now), far)), ","); got != "expire_time" {
		t.Fatalf("changed paths %s, want expire_time", got)
	}
}

func TestRequestIDsAreDerivedFromTheManifest(t *testing.T) {
	a := &registryv1.Agent{DisplayName: "x", Scopes: []string{"faq.read"}}
	b := proto.Clone(a).(*registryv1.Agent)
	if manifest.UpdateRequestID("n", a, "3") != manifest.UpdateRequestID("n", b, "3") {
		t.Fatal("the same update has two request ids")
	}
	b.Scopes = append(b.Scopes, "faq.search")
	for _, other := range []string{manifest.UpdateRequestID("n", b, "3"), manifest.UpdateRequestID("n", a, "4"), manifest.UpdateRequestID("m", a, "3")} {
		if other == manifest.UpdateRequestID("n", a, "3") {
			t.Fatalf("distinct updates share the request id %s", other)
		}
	}
	if len(manifest.UpdateRequestID(strings.Repeat("a", 63), a, "18446744073709551615")) > 128 {
		t.Fatal("an update request id is longer than the registry accepts")
	}
}
