package cli_test

import (
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestAgentsRotateKeyProof: with the agent's current credential (--key-in) the key registration
// carries a proof signed by it over the agent, the new key's thumbprint and the request id, which
// authn.VerifyKeyProof accepts for the current key and refuses for any other; a credential of
// another agent is refused before anything is sent; without one (an owner's session) no proof goes.
func TestAgentsRotateKeyProof(t *testing.T) {
	dir := t.TempDir()
	reg := &keysRegistry{}
	serveRegistry(t, dir, reg)
	current, err := authn.NewCredential("default", agentArg, "https://issuer.example/t/default")
	if err != nil {
		t.Fatal(err)
	}
	currentFile := filepath.Join(dir, "current.json")
	if err := authn.WriteCredentialFile(currentFile, current); err != nil {
		t.Fatal(err)
	}
	currentKeys := func(c *authn.Credential) []jose.JSONWebKey {
		t.Helper()
		b, err := c.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		keys, err := authn.ParsePublicJWKS(string(b), 1)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}

	out := filepath.Join(dir, "next.json")
	if code, _, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", out, "--key-in", currentFile, "--request-id", "rot-proof"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	next, err := authn.LoadCredentialFile(out)
	if err != nil {
		t.Fatal(err)
	}
	nextKeys := currentKeys(next)
	nextTP, err := authn.Thumbprint(nextKeys[0])
	if err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	proofs := append([]string(nil), reg.proofs...)
	reg.mu.Unlock()
	if len(proofs) != 1 || proofs[0] == "" {
		t.Fatalf("proofs sent %q, want one", proofs)
	}
	want := authn.KeyProofClaims{Agent: keysAgentName, NewKeyThumbprint: nextTP, RequestID: "rot-proof"}
	if _, err := authn.VerifyKeyProof(proofs[0], currentKeys(current), want, time.Now()); err != nil {
		t.Fatalf("the proof does not verify with the current key: %v", err)
	}
	if _, err := authn.VerifyKeyProof(proofs[0], nextKeys, want, time.Now()); err == nil {
		t.Fatal("the proof verifies with the new key: it must be signed by the current one")
	}

	other, err := authn.NewCredential("default", "agt_someoneelse", "https://issuer.example/t/default")
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.json")
	if err := authn.WriteCredentialFile(otherFile, other); err != nil {
		t.Fatal(err)
	}
	before := len(reg.requests())
	if code, _, _ := run(t, dir, "agents", "rotate", agentArg, "--key-out", filepath.Join(dir, "x.json"), "--key-in", otherFile); code == 0 {
		t.Fatal("another agent's credential was accepted as the proof key")
	}
	for _, m := range reg.requests()[before:] {
		if _, ok := m.(*registryv1.AddAgentKeyRequest); ok {
			t.Fatal("a key was sent with another agent's credential as the proof key")
		}
	}

	if code, _, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", filepath.Join(dir, "owner.json"), "--request-id", "rot-owner"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	reg.mu.Lock()
	last := reg.proofs[len(reg.proofs)-1]
	reg.mu.Unlock()
	if last != "" {
		t.Fatal("a proof was sent without the agent's credential")
	}
}
