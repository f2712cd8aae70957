package registry_test

import (
	"regexp"
	"testing"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// agentIDForm is what an agent id must look like: safe as a NATS subject token and OAuth client_id.
var agentIDForm = regexp.MustCompile(`^agt_[0-9a-z]{26}$`)

func TestAgentIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := registry.NewAgentID()
		if !agentIDForm.MatchString(id) || !registry.ValidAgentID(id) {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	a, b := registry.NewAgentID(), registry.NewAgentID()
	if a >= b {
		t.Fatalf("ids do not sort by creation: %s then %s", a, b)
	}

	d1 := registry.DeriveAgentID("acme", "req-1")
	if d1 != registry.DeriveAgentID("acme", "req-1") || !registry.ValidAgentID(d1) {
		t.Fatalf("derived id %q is not stable or not valid", d1)
	}
	for _, other := range []string{registry.DeriveAgentID("acme", "req-2"), registry.DeriveAgentID("other", "req-1")} {
		if other == d1 {
			t.Fatalf("different inputs derived the same id %s", d1)
		}
	}
}

func TestParseNames(t *testing.T) {
	id := registry.NewAgentID()
	tests := []struct {
		name    string
		in      string
		ok      bool
		tenant  string
		agentID string
	}{
		{"agent name", "tenants/acme/agents/" + id, true, "acme", id},
		{"missing agent", "tenants/acme/agents/", false, "", ""},
		{"bad agent id", "tenants/acme/agents/bob", false, "", ""},
		{"bad tenant", "tenants/Acme/agents/" + id, false, "", ""},
		{"extra segment", "tenants/acme/agents/" + id + "/x", false, "", ""},
		{"wrong collection", "tenants/acme/bots/" + id, false, "", ""},
		{"empty", "", false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tenant, agentID, err := registry.ParseAgentName("name", tt.in)
			if !tt.ok {
				wantError(t, err, errs.KindInvalidArgument, "", "name")
				return
			}
			if err != nil || tenant != tt.tenant || agentID != tt.agentID {
				t.Fatalf("got %q %q %v", tenant, agentID, err)
			}
		})
	}
	for in, ok := range map[string]bool{"tenants/acme": true, "tenants/a": false, "tenants/acme/x": false, "acme": false, "tenants/-x": false} {
		_, err := registry.ParseTenantName("parent", in)
		if (err == nil) != ok {
			t.Errorf("ParseTenantName(%q) error %v, want ok=%v", in, err, ok)
		}
	}
}
