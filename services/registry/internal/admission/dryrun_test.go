package admission_test

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc"

	policyv1 "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/admission"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// recordingPolicy allows everything and records the request ids it was asked with.
type recordingPolicy struct {
	mu  sync.Mutex
	ids []string
}

func (p *recordingPolicy) EvaluateAdmission(_ context.Context, in *policyv1.EvaluateAdmissionRequest, _ ...grpc.CallOption) (*policyv1.EvaluateAdmissionResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, in.GetRequestId())
	return &policyv1.EvaluateAdmissionResponse{Decision: &policyv1.Decision{DecisionId: "d1", Outcome: policyv1.Outcome_OUTCOME_ALLOW}}, nil
}

// TestDryRunRecordsNoDecision: a validate_only update (registry.WithDryRun) asks policy without a
// request id, so the policy service records nothing and the real update later is decided afresh;
// the real update asks with its derived request id.
func TestDryRunRecordsNoDecision(t *testing.T) {
	p := &recordingPolicy{}
	a := newAdmission(t, p)
	before, after := activeAgent("team:support", "faq.read"), activeAgent("team:support", "faq.read", "ticket.write")
	ctx := registry.WithUpdateRequestID(t.Context(), "u-1")
	if _, err := a.AdmitUpdate(registry.WithDryRun(ctx), "acme", before, after); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AdmitUpdate(ctx, "acme", before, after); err != nil {
		t.Fatal(err)
	}
	want, err := admissionRequestID(ctx, before, after)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) != 2 || p.ids[0] != "" || p.ids[1] != want {
		t.Fatalf("policy asked with request ids %q, want [\"\" %q]", p.ids, want)
	}
}

func admissionRequestID(ctx context.Context, before, after *registryv1.Agent) (string, error) {
	return admission.RequestID(ctx, "acme", before, after)
}
