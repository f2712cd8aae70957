package lifecycle_test

import (
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

// TestKeyAddedStartsRotation: agent.key_added starts rotation/{tenant}/{agent}/{thumbprint} once
// (a redelivery starts nothing new) with the configured overlap; an event without the key or its
// thumbprint starts no run and is permanent.
func TestKeyAddedStartsRotation(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Logger: slog.New(slog.DiscardHandler), RotationOverlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const jwk = `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k2"}`
	good := event(t, "agent.key_added", "acme", "k1", &registryv1.AgentKeyAdded{Name: "tenants/acme/agents/k1", PublicJwk: jwk, Kid: "k2", Thumbprint: "tp-new"})
	for range 2 {
		if err := svc.HandleAgentEvent(t.Context(), good); err != nil {
			t.Fatal(err)
		}
	}
	id := workflows.RotationWorkflowID("acme", "k1", "tp-new")
	d, err := c.DescribeWorkflowExecution(t.Context(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.GetWorkflowExecutionInfo().GetType().GetName() != workflows.RotationWorkflowName {
		t.Fatalf("run type %s", d.GetWorkflowExecutionInfo().GetType().GetName())
	}
	var eventID string
	_ = converter.GetDefaultDataConverter().FromPayload(d.GetWorkflowExecutionInfo().GetMemo().GetFields()["event_id"], &eventID)
	if eventID != good.ID {
		t.Fatalf("memo event_id %q, want %q", eventID, good.ID)
	}
	hist := c.GetWorkflowHistory(t.Context(), id, "", false, 0)
	first, err := hist.Next()
	if err != nil {
		t.Fatal(err)
	}
	var in workflows.RotationInput
	if err := converter.GetDefaultDataConverter().FromPayloads(first.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	if in.Overlap != time.Hour || in.NewKeyThumbprint != "tp-new" || in.NewKeyJWK != jwk || in.Agent != "tenants/acme/agents/k1" || in.EventID != good.ID {
		t.Fatalf("input = %+v", in)
	}

	bad := event(t, "agent.key_added", "acme", "k9", &registryv1.AgentKeyAdded{Name: "tenants/acme/agents/k9", Kid: "k2"})
	if err := svc.HandleAgentEvent(t.Context(), bad); err == nil || !eventstore.IsPermanent(err) {
		t.Fatalf("incomplete key_added: %v, want a permanent error", err)
	}
	if _, err := c.DescribeWorkflowExecution(t.Context(), workflows.RotationWorkflowID("acme", "k9", ""), ""); err == nil {
		t.Fatal("an incomplete key_added started a run")
	}
}

// TestKeyRemovedStartsKeyRemoval: agent.key_removed starts key-removal/{tenant}/{agent}/{thumbprint}
// once (a redelivery starts nothing new) with the removed key and reason, and the consumer subscribes
// to it; an event without the thumbprint starts no run and is permanent.
func TestKeyRemovedStartsKeyRemoval(t *testing.T) {
	if !slices.Contains(lifecycle.AgentEventSubjects, eventstore.SubjectRoot+".*."+eventstore.AggregateAgent+".*.key_removed") {
		t.Fatalf("AgentEventSubjects = %v, want agent key_removed events", lifecycle.AgentEventSubjects)
	}
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	good := event(t, "agent.key_removed", "acme", "k1", &registryv1.AgentKeyRemoved{Name: "tenants/acme/agents/k1", Kid: "k1", Thumbprint: "tp-old", Reason: "leaked"})
	for range 2 {
		if err := svc.HandleAgentEvent(t.Context(), good); err != nil {
			t.Fatal(err)
		}
	}
	id := workflows.KeyRemovalWorkflowID("acme", "k1", "tp-old")
	d, err := c.DescribeWorkflowExecution(t.Context(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.GetWorkflowExecutionInfo().GetType().GetName() != workflows.KeyRemovalWorkflowName {
		t.Fatalf("run type %s", d.GetWorkflowExecutionInfo().GetType().GetName())
	}
	first, err := c.GetWorkflowHistory(t.Context(), id, "", false, 0).Next()
	if err != nil {
		t.Fatal(err)
	}
	var in workflows.KeyRemovalInput
	if err := converter.GetDefaultDataConverter().FromPayloads(first.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	if in.Thumbprint != "tp-old" || in.Reason != "leaked" || in.Agent != "tenants/acme/agents/k1" || in.AgentID != "k1" || in.EventID != good.ID {
		t.Fatalf("input = %+v", in)
	}
	bad := event(t, "agent.key_removed", "acme", "k9", &registryv1.AgentKeyRemoved{Name: "tenants/acme/agents/k9", Kid: "k1"})
	if err := svc.HandleAgentEvent(t.Context(), bad); err == nil || !eventstore.IsPermanent(err) {
		t.Fatalf("incomplete key_removed: %v, want a permanent error", err)
	}
}
