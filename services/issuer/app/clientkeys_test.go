package app_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

// publicJWK is c's public key as one JWK.
func (c *testClient) publicJWK(t *testing.T) (string, string) {
	t.Helper()
	k := jose.JSONWebKey{Key: c.key.Public(), KeyID: c.kid, Algorithm: string(c.alg), Use: "sig"}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), base64.RawURLEncoding.EncodeToString(tp)
}

// tokenCKT reads the ckt claim of a compact JWS without verifying it.
func tokenCKT(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		CKT string `json:"ckt"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.CKT
}

// TestClientKeyRotation: a client gets a second key (both authenticate, each token's ckt names its
// key), the old key is removed (its assertions are refused, the new key's are not), and revoking the
// old key's tokens makes them inactive while the new key's tokens stay active. Adding and removing
// again changes nothing; only platform-admins and the lifecycle worker may change keys.
func TestClientKeyRotation(t *testing.T) {
	n := testkit.StartNATS(t)
	r := launchReplica(t, n, "")
	r.waitReady(t)
	old := newTestClient(t, "acme", "agt_rot")
	old.register(t, r)
	gateway := newTestClient(t, "acme", "gateway")
	if err := r.app.EnsureClient(context.Background(), "acme", &issuerv1.Client{ClientId: gateway.id, PublicJwks: gateway.jwks(t), Roles: []string{"introspector"}}); err != nil {
		t.Fatal(err)
	}
	active := func(tok string) bool {
		t.Helper()
		in := introspect(t, r, gateway, "acme", tok)
		if in.status != http.StatusOK {
			t.Fatalf("introspection: %d %v", in.status, in.body)
		}
		return in.body["active"] == true
	}
	next := newTestClient(t, "acme", "agt_rot")
	next.kid = "k-next"
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	next.key = priv
	_, oldTP := old.publicJWK(t)
	nextJWK, nextTP := next.publicJWK(t)

	oldTok := requestToken(t, r, old).str("access_token")
	if got := tokenCKT(t, oldTok); got != oldTP {
		t.Fatalf("ckt = %q, want the old key's thumbprint %q", got, oldTP)
	}

	admin := r.admin(t)
	name := "tenants/acme/clients/agt_rot"
	if _, err := admin.AddClientKey(as("acme-admin"), &issuerv1.AddClientKeyRequest{Name: name, PublicJwk: nextJWK, Thumbprint: nextTP, RequestId: "add"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tenant-admin AddClientKey: %v, want PermissionDenied", err)
	}
	for _, tc := range []struct{ name, tp string }{{"no thumbprint", ""}, {"another key's thumbprint", oldTP}} {
		if _, err := admin.AddClientKey(as("platform-admin"), &issuerv1.AddClientKeyRequest{Name: name, PublicJwk: nextJWK, Thumbprint: tc.tp, RequestId: "add-" + tc.name}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("AddClientKey with %s: %v, want InvalidArgument", tc.name, err)
		}
	}
	for _, id := range []string{"add", "add-again"} {
		resp, err := admin.AddClientKey(as("platform-admin"), &issuerv1.AddClientKeyRequest{Name: name, PublicJwk: nextJWK, Thumbprint: nextTP, RequestId: id})
		if err != nil {
			t.Fatalf("AddClientKey %s: %v", id, err)
		}
		if c := strings.Count(resp.GetClient().GetPublicJwks(), `"kid"`); c != 2 {
			t.Fatalf("client has %d keys after %s: %s", c, id, resp.GetClient().GetPublicJwks())
		}
	}
	nextTok := requestToken(t, r, next).str("access_token")
	if got := tokenCKT(t, nextTok); got != nextTP {
		t.Fatalf("new key's token ckt = %q, want %q", got, nextTP)
	}
	requestToken(t, r, old) // both keys work during the overlap

	if _, err := admin.RemoveClientKey(as("platform-admin"), &issuerv1.RemoveClientKeyRequest{Name: name, Thumbprint: oldTP, Reason: "rotation", RequestId: "rm"}); err != nil {
		t.Fatal(err)
	}
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(old.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
	requestToken(t, r, next)
	if _, err := admin.RemoveClientKey(as("platform-admin"), &issuerv1.RemoveClientKeyRequest{Name: name, Thumbprint: nextTP, Reason: "x", RequestId: "rm-last"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing the last key: %v, want FailedPrecondition", err)
	}

	if !active(oldTok) {
		t.Fatal("the old key's token is inactive before its revocation")
	}
	rev, err := admin.RevokeTokens(as("platform-admin"), &issuerv1.RevokeTokensRequest{Parent: "tenants/acme",
		Target: &issuerv1.RevokeTokensRequest_ClientKey{ClientKey: &issuerv1.ClientKeyRef{Client: name, Thumbprint: oldTP}}, Reason: "rotation", RequestId: "rev"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := rev.GetRevocation().GetEvent(); ev.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY || ev.GetClientKeyThumbprint() != oldTP ||
		ev.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_KEY_REMOVED {
		t.Fatalf("revocation = %v", ev)
	}
	// A replica whose projection still holds the removed key may mint with it a moment later: the
	// revocation covers the projection-lag allowance after it was written.
	if ev := rev.GetRevocation().GetEvent(); !ev.GetNotBefore().AsTime().After(time.Now().Add(revocation.DefaultProjectionLagAllowance / 2)) {
		t.Fatalf("CLIENT_KEY not_before = %s, want about now + %s", ev.GetNotBefore().AsTime(), revocation.DefaultProjectionLagAllowance)
	}
	testkit.Eventually(t, 0, "the old key's token inactive", func() (bool, error) { return !active(oldTok), nil })
	if !active(nextTok) {
		t.Fatal("the new key's token was revoked with the old key's")
	}
	if !active(requestToken(t, r, next).str("access_token")) {
		t.Fatal("a new token of the new key is inactive")
	}
}
