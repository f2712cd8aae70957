package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/app"
)

// TestSuspendedAgentGetsNoTokenAndItsTokensAreRevoked: agent.suspended makes the token endpoint refuse
// the agent's client at once and the reactor revoke its tokens (one AGENT revocation, not_before = the
// event's time + the allowance), which introspection then reports inactive; after agent.resumed the
// agent gets a new token once the revocation window has passed, the old token stays inactive, and the
// resumption revokes nothing.
func TestSuspendedAgentGetsNoTokenAndItsTokensAreRevoked(t *testing.T) {
	n := testkit.StartNATS(t)
	const allowance = time.Second
	r := launchReplicaWith(t, n, "", func(cfg *app.Config) { cfg.ProjectionLagAllowance = allowance })
	r.waitReady(t)
	c := newTestClient(t, "acme", "agt-suspended")
	c.register(t, r)
	gateway := newTestClient(t, "acme", "gateway")
	if err := r.app.EnsureClient(context.Background(), "acme", &issuerv1.Client{
		ClientId: gateway.id, PublicJwks: gateway.jwks(t), Roles: []string{"introspector"},
	}); err != nil {
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
	old := requestToken(t, r, c).str("access_token")
	if !active(old) {
		t.Fatal("the ACTIVE agent's token is inactive")
	}

	suspended := agentEvent(t, r, "acme", c.id, "agent.suspended",
		&registryv1.AgentSuspended{Name: c.agentName(), Reason: "bulk export", Cause: "alert:a1", Ticket: "INC-1"})
	testkit.Eventually(t, 0, "refusal after the suspension", func() (bool, error) {
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
		return resp.status == http.StatusUnauthorized && resp.str("error") == "invalid_client", nil
	})
	got := waitRevocations(t, n, "acme", 1)[0]
	if got.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT || got.GetAgent() != c.agentName() ||
		got.GetCause() != issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE || got.GetSourceEventId() != suspended.ID ||
		!got.GetNotBefore().AsTime().Equal(suspended.Time.Add(allowance)) || !strings.Contains(got.GetReason(), "alert:a1") {
		t.Fatalf("revocation = %v, want the agent's tokens up to %s + %s (event %s)", got, suspended.Time, allowance, suspended.ID)
	}
	testkit.Eventually(t, 0, "the suspended agent's token inactive", func() (bool, error) { return !active(old), nil })

	agentEvent(t, r, "acme", c.id, "agent.resumed", &registryv1.AgentResumed{Name: c.agentName(), Reason: "false positive"})
	var fresh string
	testkit.Eventually(t, 0, "a token after the resumption", func() (bool, error) {
		resp := postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r)))
		fresh = resp.str("access_token")
		return resp.status == http.StatusOK && fresh != "", nil
	})
	if iat := issuedAt(t, fresh); !iat.After(got.GetNotBefore().AsTime()) {
		t.Fatalf("a token issued at %s, within the suspension's revocation window (not_before %s)", iat, got.GetNotBefore().AsTime())
	}
	if !active(fresh) {
		t.Fatal("the resumed agent's new token is inactive")
	}
	if active(old) {
		t.Fatal("the token revoked by the suspension is active again after the resumption")
	}
	if all, _ := revocations(t, n, "acme"); len(all) != 1 {
		t.Fatalf("%d revocations after the resumption, want 1: %v", len(all), all)
	}
}

// issuedAt reads the iat claim of a compact JWS without verifying it.
func issuedAt(t *testing.T, token string) time.Time {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		IssuedAt int64 `json:"iat"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.IssuedAt == 0 {
		t.Fatalf("token payload %s: no iat (%v)", raw, err)
	}
	return time.Unix(c.IssuedAt, 0)
}
