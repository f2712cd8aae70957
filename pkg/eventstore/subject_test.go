package eventstore_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentid/agentid/pkg/eventstore"
)

// TestEventHeadersMustMatchSubject: an aggregate event whose headers name another tenant or aggregate
// than its subject (stored around Append) is malformed, so no projection applies it.
func TestEventHeadersMustMatchSubject(t *testing.T) {
	header := func(tenant, aggType, aggID string) nats.Header {
		h := nats.Header{}
		for k, v := range map[string]string{
			eventstore.HeaderSpecVersion: eventstore.SpecVersion, eventstore.HeaderID: "ev-1", eventstore.HeaderType: "client.created",
			eventstore.HeaderSource: "agentid/issuer", eventstore.HeaderTime: "2026-11-30T00:00:00Z",
			eventstore.HeaderTenant: tenant, eventstore.HeaderAggregateType: aggType, eventstore.HeaderAggregateID: aggID,
		} {
			h.Set(k, v)
		}
		return h
	}
	tests := []struct {
		name      string
		subject   string
		header    nats.Header
		wantError bool
	}{
		{"consistent", "agentid.acme.client.c1.created", header("acme", "client", "c1"), false},
		{"another tenant in the headers", "agentid.acme.client.c1.created", header("system", "client", "c1"), true},
		{"another aggregate type", "agentid.acme.agent.c1.created", header("acme", "client", "c1"), true},
		{"another aggregate id", "agentid.acme.client.c2.created", header("acme", "client", "c1"), true},
		{"not an aggregate subject", "telemetry.acme.token.requested", header("acme", "", ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := eventstore.EventFromRaw("CREDENTIALS", 7, tt.subject, tt.header, nil)
			if tt.wantError {
				if !errors.Is(err, eventstore.ErrMalformedEvent) {
					t.Fatalf("err = %v, want ErrMalformedEvent", err)
				}
				return
			}
			if err != nil || ev.ID != "ev-1" {
				t.Fatalf("EventFromRaw = %+v, %v", ev, err)
			}
		})
	}
}
