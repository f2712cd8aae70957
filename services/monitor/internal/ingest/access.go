package ingest

import (
	"github.com/google/uuid"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// accessRowNamespace derives the row id of an access event from its batch's event id and the
// reporter's event id.
var accessRowNamespace = uuid.MustParse("2b0e5f43-7c1d-5e98-a36f-4d8e1b90c7a2")

// AccessRowID is the telemetry row id of the access event eventID of the batch stored as event
// batchEventID: a UUIDv5 of both, so a redelivered or re-published batch yields the same rows and
// equal event ids of different batches never collide.
func AccessRowID(batchEventID, eventID string) string {
	return uuid.NewSHA1(accessRowNamespace, []byte(batchEventID+"\x00"+eventID)).String()
}

// mapAccessRecorded turns a recorded batch into one row per access event of the batch's tenant
// (base is the envelope's row: tenant, reporter, stream sequence), and one KindAccessDropped row
// when events were lost. An event naming another tenant is skipped and counted as lost: the
// envelope's tenant, which the subject carries, is the only one the reporter was authorized for.
func mapAccessRecorded(e eventstore.Event, base store.Event) ([]store.Event, loss, error) {
	m, err := eventstore.DecodeAs[*monitorv1.RecordAccessRequest](e)
	if err != nil {
		return nil, loss{}, err
	}
	reporter := base.Actor
	rows := make([]store.Event, 0, len(m.GetEvents())+1)
	var (
		skipped int64
		scratch []byte // the detail buffer the rows share
	)
	for _, ae := range m.GetEvents() {
		if ae.GetTenant() != base.Tenant {
			skipped++
			continue
		}
		rows = append(rows, accessRow(e, base, reporter, m.GetBatchId(), ae, &scratch))
	}
	if dropped := m.GetDropped(); dropped > 0 || skipped > 0 {
		d := newObject(nil)
		d.str("batch_id", m.GetBatchId())
		d.int("dropped", dropped)
		d.int("events", int64(len(m.GetEvents())))
		if skipped > 0 {
			d.int("skipped_other_tenant", skipped)
		}
		summary := base
		summary.Kind = KindAccessDropped
		summary.Outcome = "dropped"
		summary.Agent = ""
		summary.Detail = d.done()
		rows = append(rows, summary)
	}
	return rows, loss{dropped: max(m.GetDropped(), 0), skipped: skipped}, nil
}

// accessRow maps one access event; its detail is built in *scratch (see newObject).
func accessRow(e eventstore.Event, base store.Event, reporter, batchID string, ae *monitorv1.AccessEvent, scratch *[]byte) store.Event {
	row := store.Event{
		EventID:     AccessRowID(e.ID, ae.GetEventId()),
		Time:        ae.GetTime().AsTime(),
		Tenant:      base.Tenant,
		Agent:       ae.GetAgent(),
		Kind:        KindAccess,
		Actor:       ae.GetClientId(),
		OnBehalfOf:  ae.GetOnBehalfOf(),
		Environment: ae.GetEnvironment(),
		Scopes:      ae.GetScopes(),
		RequestID:   ae.GetRequestId(),
		StreamSeq:   base.StreamSeq,

		ClientID:      ae.GetClientId(),
		Resource:      ae.GetResource(),
		Action:        ae.GetAction(),
		Bytes:         ae.GetResponseBytes(),
		Rows:          ae.GetRows(),
		SourceAddress: sourceAddress(ae.GetSourceAddress()),
		TraceID:       ae.GetTraceId(),

		Reporter: reporter,
		TokenID:  ae.GetTokenId(),
	}
	if l := ae.GetLatency(); l != nil {
		row.LatencyUS = l.AsDuration().Microseconds()
	}
	if ae.GetTime() == nil {
		row.Time = e.Time
	}
	switch ae.GetOutcome() {
	case monitorv1.AccessOutcome_ACCESS_OUTCOME_ALLOWED:
		row.Outcome = "allowed"
	case monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED:
		row.Outcome = "denied"
	default:
		row.Outcome = "unspecified"
	}
	// Members in key order (see object); an empty optional string is left out.
	d := newObject(scratch)
	d.str("action", ae.GetAction())
	optional(&d, "audience", ae.GetAudience())
	d.str("batch_id", batchID)
	optional(&d, "binding", ae.GetTokenBinding())
	d.int("bytes", ae.GetResponseBytes())
	d.str("event_id", ae.GetEventId())
	if l := ae.GetLatency(); l != nil {
		d.float("latency_ms", float64(l.AsDuration().Microseconds())/1000)
	}
	optional(&d, "reason", ae.GetReason())
	d.str("reporter", reporter)
	d.str("resource", ae.GetResource())
	if ae.GetRows() != 0 {
		d.int("rows", ae.GetRows())
	}
	optional(&d, "source_address", ae.GetSourceAddress())
	d.int("status", int64(ae.GetStatus()))
	optional(&d, "subject", ae.GetSubject())
	optional(&d, "token_id", ae.GetTokenId())
	optional(&d, "trace_id", ae.GetTraceId())
	row.Detail = d.done()
	return row
}

// optional adds a string member unless it is empty.
func optional(d *object, k, v string) {
	if v != "" {
		d.str(k, v)
	}
}
