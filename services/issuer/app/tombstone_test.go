package app_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// createRequest is the CreateClient request a provisioning run sends for c.
func createRequest(t testing.TB, c *testClient, requestID string) *issuerv1.CreateClientRequest {
	t.Helper()
	return &issuerv1.CreateClientRequest{
		Parent: "tenants/" + c.tenant,
		Client: &issuerv1.Client{
			ClientId: c.id, Agent: "tenants/" + c.tenant + "/agents/" + c.id, Environment: "prod",
			PublicJwks: c.jwks(t), Scopes: []string{"orders.read"}, Resources: []string{agentResource},
		},
		RequestId: requestID,
	}
}

// disableRequest is the DisableClient request a deprovisioning run sends for c.
func disableRequest(c *testClient, requestID string) *issuerv1.DisableClientRequest {
	return &issuerv1.DisableClientRequest{
		Name: "tenants/" + c.tenant + "/clients/" + c.id, Reason: "agent retired", RequestId: requestID,
	}
}

// wantTombstoned checks that err is FailedPrecondition CLIENT_TOMBSTONED.
func wantTombstoned(t testing.TB, err error) {
	t.Helper()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
	if e := errs.FromStatus(err); e.Reason != "CLIENT_TOMBSTONED" {
		t.Fatalf("reason = %q (%v), want CLIENT_TOMBSTONED", e.Reason, err)
	}
}

// clientEvents returns the types of the client aggregate's events in order.
func clientEvents(t testing.TB, r *replica, tenant, clientID string) []string {
	t.Helper()
	events, _, err := r.store.Load(context.Background(), tenant, eventstore.AggregateClient, clientID)
	if err != nil {
		t.Fatal(err)
	}
	types := make([]string, len(events))
	for i, e := range events {
		types[i] = e.Type
	}
	return types
}

func TestDisableBeforeCreateTombstonesTheClient(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	c := newTestClient(t, "acme", "late-agent")
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}

	resp, err := admin.DisableClient(as("platform-admin"), disableRequest(c, "deprovision/acme/late-agent/revoke"))
	if err != nil {
		t.Fatalf("disabling a client that does not exist yet: %v", err)
	}
	got := resp.GetClient()
	if !got.GetTombstone() || got.GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED || got.GetDisableTime() == nil ||
		got.GetName() != "tenants/acme/clients/late-agent" || got.GetPublicJwks() != "" {
		t.Fatalf("DisableClient answered %v, want a DISABLED tombstone", got)
	}
	// A repeat, and a second disable with another request id, change nothing.
	for _, id := range []string{"deprovision/acme/late-agent/revoke", "deprovision/acme/late-agent/revoke-2"} {
		again, err := admin.DisableClient(as("platform-admin"), disableRequest(c, id))
		if err != nil || !again.GetClient().GetTombstone() {
			t.Fatalf("disable %s of a tombstone: %v %v", id, again, err)
		}
	}

	for _, requestID := range []string{"provision/acme/late-agent/credentials", "another-request"} {
		_, err := admin.CreateClient(as("platform-admin"), createRequest(t, c, requestID))
		wantTombstoned(t, err)
	}
	err = r.app.EnsureClient(context.Background(), "acme", createRequest(t, c, "").GetClient())
	if e := errs.FromStatus(err); e == nil || e.Kind != errs.KindFailedPrecondition || e.Reason != "CLIENT_TOMBSTONED" {
		t.Fatalf("EnsureClient of a tombstone: %v, want FailedPrecondition CLIENT_TOMBSTONED", err)
	}
	if types := clientEvents(t, r, "acme", c.id); len(types) != 1 || types[0] != "client.tombstoned" {
		t.Fatalf("events of the client: %q, want only the tombstone", types)
	}

	g, err := admin.GetClient(as("acme-admin"), &issuerv1.GetClientRequest{Name: "tenants/acme/clients/late-agent"})
	if err != nil || !g.GetClient().GetTombstone() || g.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("GetClient of a tombstone: %v %v", g, err)
	}
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
}

func TestDisabledClientCannotBeCreatedAgain(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	c := newTestClient(t, "acme", "retired-agent")
	const createID = "provision/acme/retired-agent/credentials"
	if _, err := admin.CreateClient(as("platform-admin"), createRequest(t, c, createID)); err != nil {
		t.Fatal(err)
	}
	c.activate(t, r)
	requestToken(t, r, c)
	resp, err := admin.DisableClient(as("platform-admin"), disableRequest(c, "deprovision/acme/retired-agent/revoke"))
	if err != nil || resp.GetClient().GetTombstone() || resp.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED {
		t.Fatalf("DisableClient: %v %v, want the DISABLED client (not a tombstone)", resp, err)
	}

	// Neither a late repeat of the provisioning request nor a new request brings the client back.
	for _, requestID := range []string{createID, "another-request"} {
		_, err := admin.CreateClient(as("platform-admin"), createRequest(t, c, requestID))
		wantTombstoned(t, err)
	}
	if types := clientEvents(t, r, "acme", c.id); len(types) != 2 || types[0] != "client.created" || types[1] != "client.disabled" {
		t.Fatalf("events of the client: %q", types)
	}
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
}

// TestConcurrentCreateAndDisableNeverLeaveAnActiveClient races many CreateClient calls (a
// provisioning run and its retries) against DisableClient (deprovisioning) on two replicas: whoever
// wins, the client ends DISABLED, no client is created after a tombstone, and the token endpoint
// refuses it.
func TestConcurrentCreateAndDisableNeverLeaveAnActiveClient(t *testing.T) {
	n := testkit.StartNATS(t)
	r1 := startReplica(t, n, "")
	r2 := startReplica(t, n, "")
	if err := r1.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	const (
		rounds   = 12
		creators = 8
	)
	for round := range rounds {
		c := newTestClient(t, "acme", fmt.Sprintf("race-%d", round))
		start := make(chan struct{})
		var wg sync.WaitGroup
		createErrs := make([]error, creators)
		for i := range creators {
			replica := []*replica{r1, r2}[i%2]
			wg.Go(func() {
				<-start
				_, createErrs[i] = replica.admin(t).CreateClient(as("platform-admin"), createRequest(t, c, fmt.Sprintf("create-%d", i%3)))
			})
		}
		var disableResp *issuerv1.DisableClientResponse
		var disableErr error
		wg.Go(func() {
			<-start
			disableResp, disableErr = r2.admin(t).DisableClient(as("platform-admin"), disableRequest(c, "deprovision"))
		})
		close(start)
		wg.Wait()

		if disableErr != nil {
			t.Fatalf("round %d: DisableClient: %v", round, disableErr)
		}
		for i, err := range createErrs {
			switch status.Code(err) {
			case codes.OK, codes.AlreadyExists:
			case codes.FailedPrecondition:
				wantTombstoned(t, err)
			default:
				t.Fatalf("round %d: CreateClient %d: %v", round, i, err)
			}
		}
		types := clientEvents(t, r1, "acme", c.id)
		switch {
		case len(types) == 1 && types[0] == "client.tombstoned":
			if !disableResp.GetClient().GetTombstone() {
				t.Fatalf("round %d: the disable recorded a tombstone but answered %v", round, disableResp.GetClient())
			}
			for i, err := range createErrs {
				if status.Code(err) != codes.FailedPrecondition {
					t.Fatalf("round %d: CreateClient %d answered %v after the tombstone", round, i, err)
				}
			}
		case len(types) == 2 && types[0] == "client.created" && types[1] == "client.disabled":
		default:
			t.Fatalf("round %d: events %q, want a tombstone alone or one client.created then client.disabled", round, types)
		}
		for _, r := range []*replica{r1, r2} {
			waitForDisabled(t, r, "acme", c.id)
			wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
		}
	}
}

// waitForDisabled polls a replica until it shows the client DISABLED (its projection may lag the
// write that disabled it), failing after 10 seconds.
func waitForDisabled(t *testing.T, r *replica, tenant, clientID string) {
	t.Helper()
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		g, err := r.admin(t).GetClient(as("platform-admin"), &issuerv1.GetClientRequest{Name: "tenants/" + tenant + "/clients/" + clientID})
		if err == nil && g.GetClient().GetState() == issuerv1.ClientState_CLIENT_STATE_DISABLED {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %s/%s at the replica: %v %v, want DISABLED", tenant, clientID, g, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDisableRequireExistingLeavesNoTombstone(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	c := newTestClient(t, "acme", "pending-agent")
	req := disableRequest(c, "sweep-1")
	req.RequireExisting = true
	_, err := admin.DisableClient(as("platform-admin"), req)
	if status.Code(err) != codes.NotFound || errs.FromStatus(err).Reason != "CLIENT_NOT_FOUND" {
		t.Fatalf("DisableClient(require_existing) of an unknown client: %v, want NotFound CLIENT_NOT_FOUND", err)
	}
	if types := clientEvents(t, r, "acme", c.id); len(types) != 0 {
		t.Fatalf("a NotFound disable wrote %q", types)
	}
	// The client can still be created, and then require_existing disables it as usual.
	if _, err := admin.CreateClient(as("platform-admin"), createRequest(t, c, "provision/acme/pending-agent/credentials")); err != nil {
		t.Fatalf("CreateClient after a require_existing disable: %v", err)
	}
	c.activate(t, r)
	requestToken(t, r, c)
	req.RequestId = "sweep-2"
	resp, err := admin.DisableClient(as("platform-admin"), req)
	if err != nil || resp.GetClient().GetState() != issuerv1.ClientState_CLIENT_STATE_DISABLED || resp.GetClient().GetTombstone() {
		t.Fatalf("DisableClient(require_existing) of an existing client: %v %v", resp, err)
	}
	wantOAuthError(t, postForm(t, r.tokenURL("acme"), tokenForm(c.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
}

// TestOnlyPlatformIdentitiesTombstone: a tenant-admin may disable the tenant's existing clients, but
// not tombstone a client id that has no client (which would squat an agent's future credential and
// grow the tombstones without bound); nor create a staff identity under an agent id.
func TestOnlyPlatformIdentitiesTombstone(t *testing.T) {
	r := startIssuer(t)
	admin := r.admin(t)
	agentID := "agt_0123456789abcdefghjkmnpqrs"
	c := newTestClient(t, "acme", agentID)
	_, err := admin.DisableClient(as("acme-admin"), disableRequest(c, "squat"))
	if status.Code(err) != codes.NotFound || errs.FromStatus(err).Reason != "CLIENT_NOT_FOUND" {
		t.Fatalf("tenant-admin disabling a client id without a client: %v, want NotFound CLIENT_NOT_FOUND", err)
	}
	if evs := clientEvents(t, r, "acme", agentID); len(evs) != 0 {
		t.Fatalf("a tenant-admin's refused disable wrote %v", evs)
	}
	// The agent's provisioning still gets its credential.
	if err := r.app.EnsureSigningKey(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateClient(as("platform-admin"), createRequest(t, c, "provision/acme/"+agentID+"/credentials")); err != nil {
		t.Fatalf("provisioning after a refused squat: %v", err)
	}

	// A staff identity may not take an agent id.
	_, err = admin.CreateClient(as("acme-admin"), &issuerv1.CreateClientRequest{
		Parent: "tenants/acme",
		Client: &issuerv1.Client{ClientId: "agt_1123456789abcdefghjkmnpqrs", PublicJwks: c.jwks(t), Roles: []string{"approver"}},
	})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "reserved") {
		t.Fatalf("staff identity with an agent id: %v, want InvalidArgument", err)
	}
}
