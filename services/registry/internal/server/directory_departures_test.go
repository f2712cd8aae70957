package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestSyncDirectoryMassDepartureOverGRPC: a replace departing too much of the directory is
// FailedPrecondition with the count in the message; allow_mass_departure lets it through.
func TestSyncDirectoryMassDepartureOverGRPC(t *testing.T) {
	h := newHarness(t)
	h.createTenant(t, "acme")
	ctx := testkit.WithBearer(t.Context(), acmeAdmin)
	if _, err := h.client.SyncDirectory(ctx, &registryv1.SyncDirectoryRequest{Parent: "tenants/acme",
		Principals: []*registryv1.Principal{{Id: "alice@acme.example"}, {Id: "bob@acme.example"}, {Id: "team:ops"}}}); err != nil {
		t.Fatal(err)
	}
	replace := &registryv1.SyncDirectoryRequest{Parent: "tenants/acme", Replace: true, Principals: []*registryv1.Principal{{Id: "alice@acme.example"}}}
	_, err := h.client.SyncDirectory(ctx, replace)
	wantCode(t, err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "would depart 2 of the 3 ACTIVE principals") {
		t.Fatalf("message %q does not name the count", msg)
	}
	replace.AllowMassDeparture = true
	res, err := h.client.SyncDirectory(ctx, replace)
	if err != nil || len(res.GetDeparted()) != 2 {
		t.Fatalf("allowed: %v %v", res, err)
	}
}
