package lifecycle_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// capturingTemporal keeps the input of every run it is asked to start, and starts none.
type capturingTemporal struct {
	lifecycle.Temporal
	inputs []any
}

func (c *capturingTemporal) ExecuteWorkflow(_ context.Context, _ client.StartWorkflowOptions, _ any, args ...any) (client.WorkflowRun, error) {
	c.inputs = append(c.inputs, args...)
	return nil, serviceerror.NewUnavailable("not started in this test")
}

// Provisioning runs are started with their tenant's reminder and escalation durations.
func TestProvisioningRunsGetTheTenantsApprovalEscalation(t *testing.T) {
	escalation := lifecycle.ApprovalEscalation{
		Default: lifecycle.ApprovalTiming{RemindEvery: 12 * time.Hour},
		Tenants: map[string]lifecycle.ApprovalTiming{"acme": {RemindEvery: 2 * time.Hour, EscalateAfter: 6 * time.Hour}},
	}
	tests := []struct {
		tenant                   string
		wantRemind, wantEscalate time.Duration
	}{
		{"acme", 2 * time.Hour, 6 * time.Hour},
		{"globex", 12 * time.Hour, 0}, // 0: the workflow's default (48h)
	}
	for _, tt := range tests {
		t.Run(tt.tenant, func(t *testing.T) {
			temporal := &capturingTemporal{}
			svc, err := lifecycle.New(lifecycle.Config{Temporal: temporal, Logger: slog.New(slog.DiscardHandler), Approvals: escalation})
			if err != nil {
				t.Fatal(err)
			}
			name := "tenants/" + tt.tenant + "/agents/p1"
			if err := svc.HandleAgentEvent(t.Context(), event(t, "agent.registered", tt.tenant, "p1", registered(name, tt.tenant, "p1"))); err == nil {
				t.Fatal("want the start's Unavailable error")
			}
			if len(temporal.inputs) != 1 {
				t.Fatalf("started %d runs, want 1", len(temporal.inputs))
			}
			in, ok := temporal.inputs[0].(workflows.ProvisionInput)
			if !ok {
				t.Fatalf("input %T, want workflows.ProvisionInput", temporal.inputs[0])
			}
			if in.RemindEvery != tt.wantRemind || in.EscalateAfter != tt.wantEscalate || in.Agent != name {
				t.Errorf("input = %+v, want remind every %s, escalate after %s", in, tt.wantRemind, tt.wantEscalate)
			}
		})
	}
	if _, err := lifecycle.New(lifecycle.Config{Temporal: &capturingTemporal{},
		Approvals: lifecycle.ApprovalEscalation{Default: lifecycle.ApprovalTiming{EscalateAfter: -time.Hour}}}); err == nil {
		t.Error("a negative escalation was accepted")
	}
}
