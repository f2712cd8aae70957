package lifecycle_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
	"github.com/agentid/agentid/workflows"
)

func event(t *testing.T, typ, tenant, aggID string, data proto.Message) eventstore.Event {
	t.Helper()
	b, err := proto.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: "evt-" + typ + "-" + aggID, Type: typ, Source: "agentid/registry", Time: time.Now().UTC(),
		Metadata:      eventstore.Metadata{Tenant: tenant, CorrelationID: "req-1", Traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		AggregateType: "agent", AggregateID: aggID, Stream: "AGENTS", Sequence: 1,
		DataSchema: string(data.ProtoReflect().Descriptor().FullName()), Data: b,
	}
}

func registered(name, tenant, id string) *registryv1.AgentRegistered {
	return &registryv1.AgentRegistered{Agent: &registryv1.Agent{Name: name, AgentId: id, Tenant: tenant, RiskTier: registryv1.RiskTier_RISK_TIER_HIGH}}
}

func TestHandleAgentEvent(t *testing.T) {
	srv := testkit.StartTemporal(t)
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No worker polls this queue: started runs stay at their first stage.
	svc, err := lifecycle.New(lifecycle.Config{Temporal: c, TaskQueue: "nobody-polls", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		ev         eventstore.Event
		wantErr    string
		wantRun    string // workflow id expected to run afterwards
		wantTier   string
		wantInMemo string
	}{
		{"registered starts provisioning", event(t, "agent.registered", "acme", "c1", registered("tenants/acme/agents/c1", "acme", "c1")), "", "provision/acme/c1", "high", "evt-agent.registered-c1"},
		{"the same event again is fine", event(t, "agent.registered", "acme", "c1", registered("tenants/acme/agents/c1", "acme", "c1")), "", "provision/acme/c1", "high", "evt-agent.registered-c1"},
		{"retirement starts deprovisioning", event(t, "agent.retirement_requested", "acme", "c1", &registryv1.AgentRetirementRequested{Name: "tenants/acme/agents/c1", Reason: "done"}), "", "deprovision/acme/c1", "", "evt-agent.retirement_requested-c1"},
		{"other event types are ignored", event(t, "agent.activated", "acme", "c2", &registryv1.AgentActivated{Name: "tenants/acme/agents/c2"}), "", "", "", ""},
		{"malformed agent name", event(t, "agent.registered", "acme", "c3", registered("agents/c3", "acme", "c3")), "is not tenants/{tenant}/agents/{agent}", "", "", ""},
		{"agent of another tenant", event(t, "agent.registered", "acme", "c4", registered("tenants/evil/agents/c4", "evil", "c4")), "not in the event's tenant acme", "", "", ""},
		{"agent is not the aggregate", event(t, "agent.registered", "acme", "c5", registered("tenants/acme/agents/c6", "acme", "c6")), "not the event's aggregate c5", "", "", ""},
		{"payload of another type", event(t, "agent.registered", "acme", "c7", &registryv1.AgentRetirementRequested{Name: "tenants/acme/agents/c7"}), "data schema mismatch", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := svc.HandleAgentEvent(t.Context(), tt.ev)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				// Redelivery cannot fix a malformed event: it goes to the failed-event log at once.
				if !eventstore.IsPermanent(err) {
					t.Errorf("err = %v, want it marked eventstore.Permanent", err)
				}
				for _, id := range []string{"provision/acme/" + tt.ev.AggregateID, "deprovision/acme/" + tt.ev.AggregateID} {
					if _, err := c.DescribeWorkflowExecution(t.Context(), id, ""); err == nil {
						t.Fatalf("a bad event started %s", id)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantRun == "" {
				_, err := c.DescribeWorkflowExecution(t.Context(), "provision/acme/"+tt.ev.AggregateID, "")
				var nf *serviceerror.NotFound
				if !errors.As(err, &nf) {
					t.Fatalf("an ignored event started a run: %v", err)
				}
				return
			}
			d, err := c.DescribeWorkflowExecution(t.Context(), tt.wantRun, "")
			if err != nil {
				t.Fatal(err)
			}
			info := d.GetWorkflowExecutionInfo()
			var eventID, tier, tenant string
			dc := converter.GetDefaultDataConverter()
			_ = dc.FromPayload(info.GetMemo().GetFields()["event_id"], &eventID)
			_ = dc.FromPayload(info.GetSearchAttributes().GetIndexedFields()["RiskTier"], &tier)
			_ = dc.FromPayload(info.GetSearchAttributes().GetIndexedFields()["Tenant"], &tenant)
			if eventID != tt.wantInMemo || tier != tt.wantTier || tenant != "acme" || info.GetTaskQueue() != "nobody-polls" {
				t.Fatalf("run: event_id %q, RiskTier %q, Tenant %q, queue %s", eventID, tier, tenant, info.GetTaskQueue())
			}
		})
	}
}

// unreachable is a Temporal that cannot be reached.
type unreachable struct{ lifecycle.Temporal }

func (unreachable) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	return nil, serviceerror.NewUnavailable("connection refused")
}

// TestHandleAgentEventRetriesTemporalErrors: a well-formed event whose run cannot be started now is
// not permanent: it is redelivered until Temporal answers.
func TestHandleAgentEventRetriesTemporalErrors(t *testing.T) {
	svc, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = svc.HandleAgentEvent(t.Context(), event(t, "agent.registered", "acme", "u1", registered("tenants/acme/agents/u1", "acme", "u1")))
	if err == nil || eventstore.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
}

// TestMalformedEventGoesToTheFailedLogAtOnce: on the real consumer, an agent.registered whose payload
// is not an AgentRegistered is recorded in the failed-event log on its first delivery, not redelivered
// (the back-off here is an hour: only a permanent error gets there before the deadline).
func TestMalformedEventGoesToTheFailedLogAtOnce(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/test"))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc, err := lifecycle.New(lifecycle.Config{Temporal: unreachable{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- store.Consume(ctx, lifecycle.AgentEventsConsumer, eventstore.StreamAgents, lifecycle.AgentEventSubjects,
			svc.HandleAgentEvent, eventstore.WithBackoff(time.Hour))
	}()
	t.Cleanup(func() { cancel(); <-done })
	ev, err := store.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: eventstore.AggregateAgent, AggregateID: "m1", ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: "m1", Type: "agent.registered", Subject: "tenants/acme/agents/m1",
		Data:     &registryv1.AgentRetirementRequested{Name: "tenants/acme/agents/m1"},
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "registry", Kind: eventstore.ActorService}},
	})
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		failed, err := store.FailedEvents(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, fe := range failed {
			if fe.Sequence == ev.Sequence && fe.Handler == lifecycle.AgentEventsConsumer {
				if fe.Deliveries != 1 || !strings.Contains(fe.Error, "data schema mismatch") {
					t.Fatalf("failed event = %+v, want recorded on its first delivery with the decode error", fe)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the malformed event is not in the failed-event log (entries: %+v)", failed)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countingTemporal counts the runs it is asked to start and starts none.
type countingTemporal struct {
	lifecycle.Temporal
	mu     sync.Mutex
	starts int
}

func (c *countingTemporal) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, any, ...any) (client.WorkflowRun, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starts++
	return nil, serviceerror.NewUnavailable("not started in this test")
}

// TestHandleAgentEventDecodeFailures: a payload schema this binary does not know (a newer registry
// during a rolling upgrade) is retried, so a replica that knows it can handle the event; a payload of
// another known type or one that does not unmarshal is permanent. Neither starts a run.
func TestHandleAgentEventDecodeFailures(t *testing.T) {
	withSchema := func(ev eventstore.Event, schema string) eventstore.Event {
		ev.DataSchema = schema
		return ev
	}
	withData := func(ev eventstore.Event, data []byte) eventstore.Event {
		ev.Data = data
		return ev
	}
	tests := []struct {
		name          string
		ev            eventstore.Event
		wantPermanent bool
		wantErr       error
	}{
		{
			name:    "registered with an unknown schema",
			ev:      withSchema(event(t, "agent.registered", "acme", "d1", registered("tenants/acme/agents/d1", "acme", "d1")), "agentid.registry.v2.AgentRegistered"),
			wantErr: eventstore.ErrUnknownSchema,
		},
		{
			name:    "retirement requested with an unknown schema",
			ev:      withSchema(event(t, "agent.retirement_requested", "acme", "d2", &registryv1.AgentRetirementRequested{Name: "tenants/acme/agents/d2"}), "agentid.registry.v2.AgentRetirementRequested"),
			wantErr: eventstore.ErrUnknownSchema,
		},
		{
			name:          "registered carrying another known type",
			ev:            event(t, "agent.registered", "acme", "d3", &registryv1.AgentActivated{Name: "tenants/acme/agents/d3"}),
			wantPermanent: true, wantErr: eventstore.ErrSchemaMismatch,
		},
		{
			name:          "registered whose payload does not unmarshal",
			ev:            withData(event(t, "agent.registered", "acme", "d4", registered("tenants/acme/agents/d4", "acme", "d4")), []byte{0xff, 0xff, 0xff}),
			wantPermanent: true,
		},
		{
			name:          "retirement requested whose payload does not unmarshal",
			ev:            withData(event(t, "agent.retirement_requested", "acme", "d5", &registryv1.AgentRetirementRequested{Name: "tenants/acme/agents/d5"}), []byte{0xff, 0xff, 0xff}),
			wantPermanent: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			temporal := &countingTemporal{}
			svc, err := lifecycle.New(lifecycle.Config{Temporal: temporal, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			err = svc.HandleAgentEvent(t.Context(), tt.ev)
			if err == nil || eventstore.IsPermanent(err) != tt.wantPermanent {
				t.Fatalf("err = %v (permanent %v), want an error with permanent %v", err, eventstore.IsPermanent(err), tt.wantPermanent)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.wantErr)
			}
			if temporal.starts != 0 {
				t.Errorf("an event that did not decode asked to start %d runs", temporal.starts)
			}
		})
	}
}
