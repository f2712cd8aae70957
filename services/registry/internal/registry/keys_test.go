package registry_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// newECJWK returns a fresh P-256 key as one public JWK (JSON) with kid, and its private key.
func newECJWK(t *testing.T, kid string) (string, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b), k
}

func thumbprintOf(t *testing.T, jwk string) string {
	t.Helper()
	_, _, tp, err := registry.ParsePublicJWK("public_jwk", jwk)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestAddAndRemoveAgentKey(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	a := e.activeAgent(t, "acme", "k1")
	id := a.GetAgentId()
	if len(a.GetKeys()) != 1 || a.GetKeys()[0].GetAddTime().AsTime() != a.GetCreateTime().AsTime() {
		t.Fatalf("registered keys = %v, want the registration's key added at create_time", a.GetKeys())
	}
	oldTP := a.GetKeys()[0].GetThumbprint()

	next, _ := newECJWK(t, "k2")
	got, key, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: id, PublicJWK: next, RequestID: "add-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if key.GetThumbprint() != thumbprintOf(t, next) || key.GetKid() != "k2" || key.GetAlgorithm() != "ES256" {
		t.Fatalf("added key = %v", key)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(got.GetPublicJwks()), &set); err != nil || len(set.Keys) != 2 || len(got.GetKeys()) != 2 {
		t.Fatalf("public_jwks after add = %s (%v), keys %v", got.GetPublicJwks(), err, got.GetKeys())
	}
	// A repeat with the same request id records nothing more.
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: id, PublicJWK: next, RequestID: "add-1"}, admin); err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if n := countType(e.agentEvents(t, "acme", id), registry.EventAgentKeyAdded); n != 1 {
		t.Fatalf("%d key_added events, want 1", n)
	}

	rm, err := e.svc.RemoveAgentKey(ctx, registry.RemoveAgentKey{Tenant: "acme", AgentID: id, Thumbprint: oldTP, Reason: "rotation", RequestID: "rm-1"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.GetKeys()) != 1 || rm.GetKeys()[0].GetThumbprint() != key.GetThumbprint() {
		t.Fatalf("keys after removal = %v", rm.GetKeys())
	}
	if err := json.Unmarshal([]byte(rm.GetPublicJwks()), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID != "k2" {
		t.Fatalf("public_jwks after removal = %s", rm.GetPublicJwks())
	}
	// Removing it again changes nothing; the last key cannot go.
	if _, err := e.svc.RemoveAgentKey(ctx, registry.RemoveAgentKey{Tenant: "acme", AgentID: id, Thumbprint: oldTP, Reason: "rotation", RequestID: "rm-2"}, admin); err != nil {
		t.Fatalf("second removal: %v", err)
	}
	_, err = e.svc.RemoveAgentKey(ctx, registry.RemoveAgentKey{Tenant: "acme", AgentID: id, Thumbprint: key.GetThumbprint(), Reason: "x", RequestID: "rm-3"}, admin)
	if !errs.Is(err, errs.KindFailedPrecondition) {
		t.Fatalf("removing the last key: %v, want FailedPrecondition", err)
	}
	// The read model shows what the commands returned.
	read, err := e.svc.GetAgent(ctx, "acme", id, 0)
	if err != nil || len(read.GetKeys()) != 1 || read.GetPublicJwks() != rm.GetPublicJwks() {
		t.Fatalf("read model: %v %v", read, err)
	}
}

// wantFieldMessage fails unless err is an *errs.Error on field whose message itself starts with the
// field and goes on with the rule (clients print only the message).
func wantFieldMessage(t *testing.T, err error, field string) {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) || e.Field != field || !strings.HasPrefix(e.Message, field+": ") || len(e.Message) <= len(field)+2 {
		t.Fatalf("err = %v, want a message starting with %q and the rule", err, field+": ")
	}
	if strings.Contains(e.Message, "key 0") {
		t.Fatalf("message %q speaks of a set's key 0, not of the one key given", e.Message)
	}
}

// reasonOf is the reason code of a pkg/errs error, "" for any other.
func reasonOf(err error) string {
	var e *errs.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func countType(evs []eventstore.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func TestAddAgentKeyRefusals(t *testing.T) {
	e := newEnv(t)
	e.createTenant(t, "acme")
	ctx := t.Context()
	a := e.activeAgent(t, "acme", "r1")
	other := e.activeAgent(t, "acme", "r2")

	var otherJWK json.RawMessage
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(other.GetPublicJwks()), &set); err != nil {
		t.Fatal(err)
	}
	otherJWK = set.Keys[0]
	if err := json.Unmarshal([]byte(a.GetPublicJwks()), &set); err != nil {
		t.Fatal(err)
	}
	ownJWK := set.Keys[0]

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	private, _ := json.Marshal(jose.JSONWebKey{Key: ec, KeyID: "priv", Algorithm: "ES256"})
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaJWK, _ := json.Marshal(jose.JSONWebKey{Key: &rk.PublicKey, KeyID: "rsa", Algorithm: "RS256"})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384JWK, _ := json.Marshal(jose.JSONWebKey{Key: &p384.PublicKey, KeyID: "p384", Algorithm: "ES384"})
	sameKid, _ := newECJWK(t, "k1")
	noKid, _ := newECJWK(t, "")

	tests := []struct {
		name       string
		jwk        string
		wantKind   errs.Kind
		wantReason string
	}{
		{"private key", string(private), errs.KindInvalidArgument, ""},
		{"RSA", string(rsaJWK), errs.KindInvalidArgument, ""},
		{"P-384", string(p384JWK), errs.KindInvalidArgument, ""},
		{"not JSON", "not a key", errs.KindInvalidArgument, ""},
		{"a JWK Set", a.GetPublicJwks(), errs.KindInvalidArgument, ""},
		{"no kid", noKid, errs.KindInvalidArgument, ""},
		{"kid of its current key", sameKid, errs.KindInvalidArgument, ""},
		{"its own current key", string(ownJWK), errs.KindAlreadyExists, registry.ReasonKeyInUse},
		{"another agent's key", string(otherJWK), errs.KindAlreadyExists, registry.ReasonKeyInUse},
	}
	before := len(e.agentEvents(t, "acme", a.GetAgentId()))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: a.GetAgentId(), PublicJWK: tc.jwk, RequestID: "bad-" + string(rune('a'+i))}, admin)
			if !errs.Is(err, tc.wantKind) {
				t.Fatalf("err = %v, want %v", err, tc.wantKind)
			}
			if tc.wantReason != "" && reasonOf(err) != tc.wantReason {
				t.Fatalf("reason = %q, want %q", reasonOf(err), tc.wantReason)
			}
			if tc.wantKind == errs.KindInvalidArgument {
				wantFieldMessage(t, err, "public_jwk")
			}
		})
	}
	if after := len(e.agentEvents(t, "acme", a.GetAgentId())); after != before {
		t.Fatalf("refused additions wrote %d events", after-before)
	}

	// A third key while a rotation is in progress is refused; so is a key the agent removed.
	k2, _ := newECJWK(t, "k2")
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: a.GetAgentId(), PublicJWK: k2, RequestID: "ok-1"}, admin); err != nil {
		t.Fatal(err)
	}
	k3, _ := newECJWK(t, "k3")
	_, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: a.GetAgentId(), PublicJWK: k3, RequestID: "third"}, admin)
	if !errs.Is(err, errs.KindInvalidArgument) {
		t.Fatalf("third key: %v, want InvalidArgument", err)
	}
	wantFieldMessage(t, err, "public_jwk")
	// The other agent may not take the key this agent just added.
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: other.GetAgentId(), PublicJWK: k2, RequestID: "steal"}, admin); reasonOf(err) != registry.ReasonKeyInUse {
		t.Fatalf("other agent adding k2: %v, want %s", err, registry.ReasonKeyInUse)
	}
	oldTP := thumbprintOf(t, string(ownJWK))
	if _, err := e.svc.RemoveAgentKey(ctx, registry.RemoveAgentKey{Tenant: "acme", AgentID: a.GetAgentId(), Thumbprint: oldTP, Reason: "rotation", RequestID: "rm"}, admin); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: a.GetAgentId(), PublicJWK: string(ownJWK), RequestID: "reuse"}, admin); reasonOf(err) != registry.ReasonKeyInUse {
		t.Fatalf("re-adding a removed key: %v, want %s", err, registry.ReasonKeyInUse)
	}

	// A suspended agent gets no new key; an owner constraint is enforced.
	if _, err := e.svc.SuspendAgent(ctx, registry.SuspendAgent{Tenant: "acme", AgentID: other.GetAgentId(), Reason: "incident", RequestID: "sus"}, admin); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: other.GetAgentId(), PublicJWK: k3, RequestID: "sus-add"}, admin); !errs.Is(err, errs.KindFailedPrecondition) {
		t.Fatalf("suspended agent: %v, want FailedPrecondition", err)
	}
	a3 := e.activeAgent(t, "acme", "r3")
	if _, _, err := e.svc.AddAgentKey(ctx, registry.AddAgentKey{Tenant: "acme", AgentID: a3.GetAgentId(), PublicJWK: k3, RequestID: "own", RequireOwner: "team:other"}, admin); !errs.Is(err, errs.KindPermissionDenied) {
		t.Fatalf("foreign owner: %v, want PermissionDenied", err)
	}
}
