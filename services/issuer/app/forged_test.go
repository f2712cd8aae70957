package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// TestForgedClientCreatedRefusedByProjection appends client.created events around the issuer's
// commands, as the holder of a leaked NATS credential that may publish on CREDENTIALS could: the
// credentials projection refuses those the commands would refuse (a system-only role outside tenant
// system, a client of another tenant than its event), records them in the failed-event log, and the
// client cannot get a token; a well-formed one appended the same way is applied.
func TestForgedClientCreatedRefusedByProjection(t *testing.T) {
	n := testkit.StartNATS(t)
	r := startReplica(t, n, "")
	ctx := context.Background()
	if err := r.app.EnsureSigningKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	forger := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/issuer"),
		eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler)))

	tests := []struct {
		name         string
		id           string
		clientTenant string
		roles        []string
		wantRefused  bool
	}{
		{name: "platform-admin outside system", id: "forged-admin", clientTenant: "acme", roles: []string{"platform-admin"}, wantRefused: true},
		{name: "lifecycle-worker outside system", id: "forged-worker", clientTenant: "acme", roles: []string{"lifecycle-worker"}, wantRefused: true},
		{name: "client of another tenant", id: "forged-cross", clientTenant: "system", wantRefused: true},
		{name: "well-formed client", id: "plain-client", clientTenant: "acme", roles: []string{"auditor"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, "acme", tt.id)
			ev, err := forger.Append(ctx, eventstore.Append{
				Tenant: "acme", AggregateType: eventstore.AggregateClient, AggregateID: tt.id, ExpectedVersion: 0, IdempotencyKey: "forged-" + tt.id,
				Type: credentials.EventClientCreated, Subject: credentials.ClientName("acme", tt.id),
				Data: &issuerv1.ClientCreated{Client: &issuerv1.Client{
					Name: credentials.ClientName(tt.clientTenant, tt.id), Tenant: tt.clientTenant, ClientId: tt.id,
					PublicJwks: c.jwks(t), Roles: tt.roles, TokenTtlSeconds: 300,
					State: issuerv1.ClientState_CLIENT_STATE_ACTIVE,
				}},
				Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "mallory", Kind: eventstore.ActorService}},
			})
			if err != nil {
				t.Fatal(err)
			}
			// The projection has seen the event once it is at or past its sequence.
			testkit.Eventually(t, 0, "the credentials projection to reach the forged event", func() (bool, error) {
				failed, err := forger.FailedEvents(ctx)
				if err != nil {
					return false, err
				}
				recorded := slices.ContainsFunc(failed, func(fe eventstore.FailedEvent) bool {
					return fe.Handler == credentials.ProjectionName && fe.EventID == ev.ID
				})
				if tt.wantRefused {
					return recorded, nil
				}
				if recorded {
					t.Fatalf("a well-formed client.created was recorded as failed: %+v", failed)
				}
				return postForm(t, r.tokenURL(c.tenant), tokenForm(c.assertion(t, r))).status == http.StatusOK, nil
			})
			if tt.wantRefused {
				wantOAuthError(t, postForm(t, r.tokenURL(c.tenant), tokenForm(c.assertion(t, r))), http.StatusUnauthorized, "invalid_client")
			}
		})
	}
}
