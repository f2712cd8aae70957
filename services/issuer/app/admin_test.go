package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

func codeOf(err error) string { return status.Code(err).String() }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAdminAuthorization(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	if err := r.app.EnsureSigningKey(context.Background(), "beta"); err != nil {
		t.Fatal(err)
	}
	existing := newTestClient(t, "acme", "existing")
	existing.register(t, r, "x")

	n := 0
	agentClient := func(t *testing.T) *issuerv1.CreateClientRequest {
		n++
		id := fmt.Sprintf("authz-%d", n)
		c := newTestClient(t, "acme", id)
		return &issuerv1.CreateClientRequest{Parent: "tenants/acme", Client: &issuerv1.Client{
			ClientId: id, Agent: "tenants/acme/agents/" + id, Environment: "dev", PublicJwks: c.jwks(t),
			Resources: []string{agentResource},
		}}
	}
	serviceClient := func(t *testing.T) *issuerv1.CreateClientRequest {
		req := agentClient(t)
		req.Client.Agent, req.Client.Environment, req.Client.Roles = "", "", []string{"tenant-admin"}
		return req
	}
	calls := map[string]func(t *testing.T, ctx context.Context) error{
		"CreateClient(agent)": func(t *testing.T, ctx context.Context) error {
			_, err := admin.CreateClient(ctx, agentClient(t))
			return err
		},
		"CreateClient(service identity)": func(t *testing.T, ctx context.Context) error {
			_, err := admin.CreateClient(ctx, serviceClient(t))
			return err
		},
		"GetClient": func(_ *testing.T, ctx context.Context) error {
			_, err := admin.GetClient(ctx, &issuerv1.GetClientRequest{Name: "tenants/acme/clients/existing"})
			return err
		},
		"DisableClient(unknown)": func(_ *testing.T, ctx context.Context) error {
			n++
			_, err := admin.DisableClient(ctx, &issuerv1.DisableClientRequest{Name: fmt.Sprintf("tenants/acme/clients/authz-%d", n)})
			return err
		},
		"ListSigningKeys": func(_ *testing.T, ctx context.Context) error {
			_, err := admin.ListSigningKeys(ctx, &issuerv1.ListSigningKeysRequest{Parent: "tenants/acme"})
			return err
		},
	}
	tests := []struct {
		call  string
		as    string
		wants string
	}{
		{"CreateClient(agent)", "platform-admin", "OK"},
		{"CreateClient(agent)", "acme-admin", "PermissionDenied"},
		{"CreateClient(agent)", "acme-auditor", "PermissionDenied"},
		{"CreateClient(agent)", "acme-agent", "PermissionDenied"},
		{"CreateClient(agent)", "beta-admin", "NotFound"},
		{"CreateClient(agent)", "", "Unauthenticated"},
		{"CreateClient(agent)", "forged", "Unauthenticated"},
		{"CreateClient(service identity)", "platform-admin", "OK"},
		{"CreateClient(service identity)", "acme-admin", "OK"},
		{"CreateClient(service identity)", "beta-admin", "NotFound"},
		{"CreateClient(service identity)", "acme-auditor", "PermissionDenied"},
		{"GetClient", "platform-admin", "OK"},
		{"GetClient", "acme-admin", "OK"},
		{"GetClient", "acme-auditor", "PermissionDenied"},
		{"GetClient", "acme-agent", "PermissionDenied"},
		{"GetClient", "beta-admin", "NotFound"},
		{"GetClient", "", "Unauthenticated"},
		{"DisableClient(unknown)", "platform-admin", "OK"},   // records a tombstone
		{"DisableClient(unknown)", "acme-admin", "NotFound"}, // a tenant-admin disables existing clients only
		{"DisableClient(unknown)", "acme-auditor", "PermissionDenied"},
		{"DisableClient(unknown)", "beta-admin", "NotFound"},
		{"DisableClient(unknown)", "", "Unauthenticated"},
		{"ListSigningKeys", "platform-admin", "OK"},
		{"ListSigningKeys", "acme-admin", "OK"},
		{"ListSigningKeys", "acme-auditor", "OK"},
		{"ListSigningKeys", "acme-agent", "PermissionDenied"},
		{"ListSigningKeys", "beta-admin", "NotFound"},
		{"ListSigningKeys", "", "Unauthenticated"},
	}
	for _, tt := range tests {
		name := tt.call + " as " + tt.as
		if tt.as == "" {
			name = tt.call + " without a token"
		}
		t.Run(name, func(t *testing.T) {
			if got := codeOf(calls[tt.call](t, as(tt.as))); got != tt.wants {
				t.Fatalf("code = %s, want %s", got, tt.wants)
			}
		})
	}

	// Authorization failures write nothing: the only clients (and tombstones) are the ones created
	// with OK.
	for i := 1; i <= n; i++ {
		_, version, err := r.store.Load(context.Background(), "acme", eventstore.AggregateClient, fmt.Sprintf("authz-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		_, gerr := admin.GetClient(as("platform-admin"), &issuerv1.GetClientRequest{Name: fmt.Sprintf("tenants/acme/clients/authz-%d", i)})
		if (version > 0) != (gerr == nil) {
			t.Fatalf("authz-%d: version %d, GetClient %v", i, version, gerr)
		}
	}
}

func TestReplicasShareKeysAndReplayCache(t *testing.T) {
	n := testkit.StartNATS(t)
	public := "http://issuer.test" // what a load balancer in front of both would expose
	// Both replicas start at once and race to create the system tenant's key.
	replicas := []*replica{launchReplica(t, n, public), launchReplica(t, n, public)}
	a, b := replicas[0], replicas[1]
	a.waitReady(t)
	b.waitReady(t)

	// Both replicas race to create the key of a new tenant: one key exists.
	var ensure sync.WaitGroup
	for _, r := range replicas {
		for range 3 {
			ensure.Go(func() {
				if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
					t.Error(err)
				}
			})
		}
	}
	ensure.Wait()
	for _, tenant := range []string{"system", "acme"} {
		events, _, err := a.store.Load(context.Background(), tenant, eventstore.AggregateSigningKey, tenant)
		if err != nil || len(events) != 1 {
			t.Fatalf("tenant %s has %d signing key events (%v), want 1", tenant, len(events), err)
		}
		kidA, kidB := jwksKids(t, a, tenant), jwksKids(t, b, tenant)
		if len(kidA) != 1 || strings.Join(kidA, ",") != strings.Join(kidB, ",") {
			t.Fatalf("tenant %s: replica keys %v and %v", tenant, kidA, kidB)
		}
	}

	// An assertion used at one replica is refused at the other.
	c := newTestClient(t, "acme", "agent-r")
	c.register(t, a, "x")
	waitForClient(t, b, "acme", c.id)
	assertion := c.sign(t, c.claims(public+"/t/acme"))
	if resp := postForm(t, a.tokenURL("acme"), tokenForm(assertion)); resp.status != http.StatusOK {
		t.Fatalf("replica A: %d %v", resp.status, resp.body)
	}
	replayed := postForm(t, b.tokenURL("acme"), tokenForm(assertion))
	wantOAuthError(t, replayed, http.StatusUnauthorized, "invalid_client")
	if replayed.str("error_description") != "client authentication failed" {
		t.Fatalf("description = %q", replayed.str("error_description"))
	}
	// And a token from one replica is active at the other.
	tok := postForm(t, b.tokenURL("acme"), tokenForm(c.sign(t, c.claims(public+"/t/acme")))).str("access_token")
	v := tokenForm(c.sign(t, c.claims(public+"/t/acme")))
	v.Del("grant_type")
	v.Set("token", tok)
	if in := postForm(t, a.introspectURL("acme"), v); in.body["active"] != true {
		t.Fatalf("introspection at the other replica = %v", in.body)
	}
}

func jwksKids(t *testing.T, r *replica, tenant string) []string {
	t.Helper()
	resp, err := http.Get(r.srv.URL + "/t/" + tenant + "/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// waitForClient waits until r's projection knows the client (it was created through another replica).
func waitForClient(t *testing.T, r *replica, tenant, clientID string) {
	t.Helper()
	admin := r.admin(t)
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		_, err := admin.GetClient(as("platform-admin"), &issuerv1.GetClientRequest{Name: "tenants/" + tenant + "/clients/" + clientID})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s/%s not visible at the replica: %v", tenant, clientID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
