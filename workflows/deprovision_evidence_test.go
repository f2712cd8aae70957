package workflows_test

import (
	"errors"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// TestRemoveGrantsSaysWhatWasDone: the remove_roles step never claims a removal — nothing is removed at
// the issuer; it says the disabled client refuses every token request and lists the grants its record
// keeps; a client that would still be granted a token fails it with ErrStillActive.
func TestRemoveGrantsSaysWhatWasDone(t *testing.T) {
	tests := []struct {
		name     string
		client   func() *issuerv1.Client
		want     []string // substrings of the result
		wantErr  string   // application error type
		notWants []string
	}{
		{
			name: "disabled client",
			client: func() *issuerv1.Client {
				c := activeClient("g1")
				c.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
				return c
			},
			want: []string{"nothing removed", "refuses every token request (invalid_client, client_disabled)",
				"its record keeps scopes [orders.read], resources [https://files.example], roles none"},
			notWants: []string{"removed with", "no roles or scopes remain"},
		},
		{name: "no client", want: []string{"no client was ever issued", "nothing to remove"}},
		{name: "client still active", client: func() *issuerv1.Client { return activeClient("g1") }, wantErr: workflows.ErrStillActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakes := workflowstest.Start(t)
			if tt.client != nil {
				fakes.Issuer.Put(tt.client())
			}
			acts := activitiesFor(t, fakes, newStore(t))
			res, err := acts.RemoveGrants(t.Context(), workflows.RemoveGrantsRequest{Tenant: tenant, AgentID: "g1"})
			if tt.wantErr != "" {
				var app *temporal.ApplicationError
				if !errors.As(err, &app) || app.Type() != tt.wantErr {
					t.Fatalf("RemoveGrants = %+v, %v; want an error of type %s", res, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Result, w) {
					t.Errorf("result %q does not say %q", res.Result, w)
				}
			}
			for _, nw := range tt.notWants {
				if strings.Contains(res.Result, nw) {
					t.Errorf("result %q claims %q", res.Result, nw)
				}
			}
			if got := len(workflowstest.RequestsOf[*issuerv1.DisableClientRequest](fakes, "DisableClient")); got != 0 {
				t.Errorf("RemoveGrants disabled the client itself (%d requests)", got)
			}
		})
	}
}
