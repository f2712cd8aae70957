package ingest_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
)

func TestMapTokenRequestedBatch(t *testing.T) {
	answered := at.Add(-15 * time.Millisecond)
	single := &issuerv1.TokenRequested{Tenant: "acme", ClientId: "faq", Agent: "tenants/acme/agents/faq", GrantType: "client_credentials",
		Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, Scopes: []string{"kb.read"}, TokenId: "tok-1",
		Environment: "dev", RequestId: "req-1", RemoteAddr: "127.0.0.1:5000", Time: timestamppb.New(answered)}
	batch := &issuerv1.TokenRequestedBatch{Requests: []*issuerv1.TokenRequested{
		single,
		{Tenant: "acme", ClientId: "other", GrantType: "client_credentials", Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_DENIED,
			Error: "invalid_client", RequestId: "req-2"}, // no time: the batch's
		{Tenant: "globex", ClientId: "intruder", RequestId: "req-3"}, // another tenant: skipped
	}}
	md := eventstore.Metadata{Tenant: "acme"}
	rows, err := ingest.Map(envelope(t, "token.requested.batch", "tenants/acme", batch, md))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("rows = %+v, want the two requests of acme", rows)
	}
	// A batched request maps to the row its single event would have, but for the row id and time.
	alone, err := ingest.Map(envelope(t, "token.requested", "tenants/acme", single, md))
	if err != nil {
		t.Fatal(err)
	}
	want := alone[0]
	want.EventID, want.Time = ingest.TokenRowID("01a2192e-aaaa-7000-8000-000000000001", 0), answered
	got := rows[0]
	if gd, wd := decodeDetail(t, got.Detail), decodeDetail(t, want.Detail); len(gd) != len(wd) || gd["token_id"] != wd["token_id"] {
		t.Fatalf("detail %v, want %v", gd, wd)
	}
	got.Detail, want.Detail = "", ""
	if got.EventID != want.EventID || !got.Time.Equal(want.Time) || got.Tenant != "acme" || got.Kind != "token.requested" ||
		got.Outcome != "issued" || got.Actor != "faq" || got.Agent != "tenants/acme/agents/faq" || got.RequestID != "req-1" ||
		got.Environment != "dev" || got.StreamSeq != 42 {
		t.Fatalf("row = %+v, want %+v", got, want)
	}
	denied := rows[1]
	if denied.Outcome != "invalid_client" || denied.ClientID != "other" || denied.Actor != "other" || denied.Agent != "" || !denied.Time.Equal(at) ||
		denied.EventID != ingest.TokenRowID("01a2192e-aaaa-7000-8000-000000000001", 1) || denied.EventID == got.EventID {
		t.Fatalf("denied row = %+v", denied)
	}
	if d := decodeDetail(t, denied.Detail); d["error"] != "invalid_client" {
		t.Fatalf("denied detail = %v", d)
	}
	// A redelivered batch yields the same rows (the store keeps each row id once).
	again, err := ingest.Map(envelope(t, "token.requested.batch", "tenants/acme", batch, md))
	if err != nil || again[0].EventID != rows[0].EventID || again[1].EventID != rows[1].EventID {
		t.Fatalf("redelivery mapped to %+v, %v", again, err)
	}
}

func TestMapTokenRequestedBatchWithoutTenantIsRejected(t *testing.T) {
	batch := &issuerv1.TokenRequestedBatch{Requests: []*issuerv1.TokenRequested{{Tenant: "acme", RequestId: "r"}}}
	if _, err := ingest.Map(envelope(t, "token.requested.batch", "tenants/acme", batch, eventstore.Metadata{})); err == nil {
		t.Fatal("a batch without an envelope tenant was mapped")
	}
}

func TestIngestTokenRequestedBatchOneRowPerRequest(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.store)
	batch := &issuerv1.TokenRequestedBatch{}
	for i := range 300 {
		batch.Requests = append(batch.Requests, &issuerv1.TokenRequested{Tenant: "acme", ClientId: "faq",
			Outcome: issuerv1.TokenOutcome_TOKEN_OUTCOME_ISSUED, RequestId: fmt.Sprint("req-", i), Time: timestamppb.New(at)})
	}
	ev := h.publish(t, "telemetry.acme.token.requested", "token.requested.batch", "tenants/acme", batch, eventstore.Metadata{Tenant: "acme"})
	h.waitAcked(t, ev.Sequence)
	rows := h.rows(t, "acme", 300)
	seen := map[string]bool{}
	for _, r := range rows {
		if r.Kind != "token.requested" || r.Outcome != "issued" || r.StreamSeq != ev.Sequence || !r.Time.Equal(at) {
			t.Fatalf("row = %+v", r)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != 300 {
		t.Fatalf("%d distinct requests stored, want 300", len(seen))
	}
}
