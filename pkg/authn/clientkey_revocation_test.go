package authn_test

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// TestDenylistClientKey: a CLIENT_KEY revocation refuses the tokens a client obtained with that key
// up to not_before, and neither the tokens of the client's other key nor those of another client
// that has a key with the same thumbprint, nor tokens issued after it.
func TestDenylistClientKey(t *testing.T) {
	nb := revBase
	d := authn.NewDenylist(authn.DenylistConfig{Now: func() time.Time { return nb }})
	ev := &issuerv1.TokensRevoked{
		Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY, Tenant: "acme", ClientId: "agt_1",
		ClientKeyThumbprint: "old-tp", NotBefore: timestamppb.New(nb), ExpireTime: timestamppb.New(nb.Add(authn.MaxTokenLifetime)),
		Cause: issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_KEY_REMOVED,
	}
	if err := d.Apply(ev, 1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		client, ckt string
		tenant      string
		iat         time.Time
		wantRevoked bool
	}{
		{"old key before removal", "agt_1", "old-tp", "acme", nb.Add(-time.Minute), true},
		{"old key at removal", "agt_1", "old-tp", "acme", nb, true},
		{"new key during the overlap", "agt_1", "new-tp", "acme", nb.Add(-time.Minute), false},
		{"token without ckt", "agt_1", "", "acme", nb.Add(-time.Minute), false},
		{"another client, same thumbprint", "agt_2", "old-tp", "acme", nb.Add(-time.Minute), false},
		{"another tenant", "agt_1", "old-tp", "other", nb.Add(-time.Minute), false},
		{"old key after not_before", "agt_1", "old-tp", "acme", nb.Add(time.Second), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &authn.Claims{Tenant: tc.tenant, ClientID: tc.client, Subject: tc.client, ClientKeyThumbprint: tc.ckt, IssuedAt: tc.iat, ID: "j"}
			if got := d.Check(c, "sk1") != nil; got != tc.wantRevoked {
				t.Fatalf("revoked = %v, want %v", got, tc.wantRevoked)
			}
		})
	}
	if d.Len() != 1 {
		t.Fatalf("Len = %d, want 1", d.Len())
	}
	nb = nb.Add(authn.MaxTokenLifetime + time.Hour)
	if n := d.Prune(); n != 1 || d.Len() != 0 {
		t.Fatalf("Prune forgot %d, Len %d; want 1, 0", n, d.Len())
	}

	bad := &issuerv1.TokensRevoked{Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY, Tenant: "acme", ClientId: "agt_1",
		NotBefore: timestamppb.New(nb), ExpireTime: timestamppb.New(nb.Add(time.Hour))}
	if err := d.Apply(bad, 2); err == nil {
		t.Fatal("CLIENT_KEY revocation without a thumbprint was accepted")
	}
}

// TestClaimsClientKeyThumbprintRoundTrip: ckt survives encoding.
func TestClaimsClientKeyThumbprintRoundTrip(t *testing.T) {
	b, err := json.Marshal(authn.Claims{ClientID: "agt_1", ClientKeyThumbprint: "tp"})
	if err != nil {
		t.Fatal(err)
	}
	var c authn.Claims
	if err := json.Unmarshal(b, &c); err != nil || c.ClientKeyThumbprint != "tp" {
		t.Fatalf("decoded %s as %+v (%v)", b, c, err)
	}
}
