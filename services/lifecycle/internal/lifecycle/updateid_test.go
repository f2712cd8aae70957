package lifecycle_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

// updateRecorder is a lifecycle.Temporal that records the update ids it is asked for and answers that
// no run waits (the embedded client is never called).
type updateRecorder struct {
	client.Client
	mu  sync.Mutex
	ids []string
}

func (u *updateRecorder) UpdateWorkflow(_ context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ids = append(u.ids, o.UpdateID)
	return nil, serviceerror.NewNotFound("workflow not found")
}

// TestDecisionUpdateIDsAreScopedToTheCaller: the update id of a decision is derived from the caller
// and the request id — the same caller repeating a request id asks for the same update (answered like
// the first), another caller with the same request id gets another update, so nobody can pre-empt
// someone else's request id; a decision without a caller identity is refused before any update.
func TestDecisionUpdateIDsAreScopedToTheCaller(t *testing.T) {
	rec := &updateRecorder{}
	// The registry knows no agent a1: the approvers below are neither its owner nor its sponsor.
	svc, err := lifecycle.New(lifecycle.Config{Temporal: rec, Registry: directoryRegistry{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Approvers: an owner's decision would first be checked against the directory.
	approver := []authn.Role{authn.RoleApprover}
	alice := &authn.Principal{ID: "alice@corp", Tenant: "acme", Roles: approver}
	mallory := &authn.Principal{ID: "mallory@corp", Tenant: "acme", Roles: approver}
	elsewhere := &authn.Principal{ID: "alice@corp", Tenant: "other", Roles: approver}
	decide := func(p *authn.Principal, requestID string) error {
		_, err := svc.DecideRotation(t.Context(), p, lifecycle.RotationDecision{
			Agent: "tenants/acme/agents/a1", Thumbprint: "tp-new", Token: "eyJ.x.y", RequestID: requestID,
		})
		return err
	}
	for _, p := range []*authn.Principal{alice, alice, mallory, elsewhere} {
		if err := decide(p, "req-1"); err == nil {
			t.Fatal("decision without a waiting run succeeded")
		}
	}
	if len(rec.ids) != 4 {
		t.Fatalf("update ids = %v, want 4", rec.ids)
	}
	if rec.ids[0] != rec.ids[1] {
		t.Errorf("the same caller's repeat got update ids %q and %q, want the same", rec.ids[0], rec.ids[1])
	}
	for i, who := range map[int]string{2: "another caller", 3: "the same id in another tenant"} {
		if rec.ids[i] == rec.ids[0] {
			t.Errorf("%s with the same request id got alice's update id %q", who, rec.ids[i])
		}
	}
	if rec.ids[0] == "req-1" {
		t.Error("the update id is the bare request id")
	}
	if err := decide(&authn.Principal{Tenant: "acme", Roles: approver}, "req-1"); err == nil || len(rec.ids) != 4 {
		t.Fatalf("a caller without an id: err %v, updates %v; want refused before any update", err, rec.ids)
	}
}
