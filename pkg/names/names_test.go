package names_test

import (
	"testing"

	"github.com/agentid/agentid/pkg/names"
)

func TestDeriveAgentIDIsStableAndDistinct(t *testing.T) {
	a := names.DeriveAgentID("acme", "req-1")
	if !names.ValidAgentID(a) {
		t.Fatalf("derived id %q is not a valid agent id", a)
	}
	// A fixed vector: the id is a contract between agentctl and the registry (and every registry
	// version), so the derivation must never change.
	if want := "agt_2pxrxs26ys0ezb1vy04tzy83b7"; a != want {
		t.Fatalf("DeriveAgentID(acme, req-1) = %s, want %s", a, want)
	}
	for _, other := range []string{names.DeriveAgentID("acme", "req-2"), names.DeriveAgentID("acme2", "req-1"), names.DeriveAgentID("acm", "ereq-1")} {
		if other == a {
			t.Fatalf("distinct inputs derived the same id %s", a)
		}
	}
}

func TestNewAgentIDsAreValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := names.NewAgentID()
		if !names.ValidAgentID(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

func TestValidAgentIDRejectsMalformed(t *testing.T) {
	for _, id := range []string{"", "agt_", "agt_0123456789abcdefghjkmnpqr", "AGT_0123456789abcdefghjkmnpqrs", "agt_0123456789abcdefghjkmnpqri", "agt_0123456789abcdefghjkmnpqrst", "x" + names.NewAgentID()} {
		if names.ValidAgentID(id) {
			t.Errorf("ValidAgentID(%q) = true", id)
		}
	}
}
