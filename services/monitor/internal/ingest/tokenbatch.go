package ingest

import (
	"strconv"

	"github.com/google/uuid"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// TypeTokenRequestedBatch is the issuer's token request telemetry in batches
// (issuerv1.TokenRequestedBatch); each request becomes a row of kind TypeTokenRequested.
const TypeTokenRequestedBatch = "token.requested.batch"

// tokenRowNamespace derives the row id of a batched token request from its batch's event id and
// its position in the batch.
var tokenRowNamespace = uuid.MustParse("6f1c2a9e-3b47-5d0a-9e61-8c2f4b7d1a53")

// TokenRowID is the telemetry row id of the index-th request of the batch stored as event
// batchEventID: a UUIDv5 of both, so a redelivered batch yields the same rows.
func TokenRowID(batchEventID string, index int) string {
	return uuid.NewSHA1(tokenRowNamespace, []byte(batchEventID+"\x00"+strconv.Itoa(index))).String()
}

// mapTokenRequestedBatch turns a batch into one row per token request, exactly as the request
// would have been mapped as a single token.requested event, with the request's own time (the
// batch's time when it has none). A request naming another tenant than the envelope is skipped:
// the envelope's tenant, which the subject carries, is the one the publisher was authorized for.
func mapTokenRequestedBatch(e eventstore.Event, base store.Event) ([]store.Event, error) {
	m, err := eventstore.DecodeAs[*issuerv1.TokenRequestedBatch](e)
	if err != nil {
		return nil, err
	}
	rows := make([]store.Event, 0, len(m.GetRequests()))
	var scratch []byte // the detail buffer the rows share
	for i, r := range m.GetRequests() {
		if r.GetTenant() != "" && r.GetTenant() != base.Tenant {
			continue
		}
		row := base
		row.EventID = TokenRowID(e.ID, i)
		row.Kind = TypeTokenRequested
		row.Agent, row.Actor = "", ""
		if r.GetTime() != nil {
			row.Time = r.GetTime().AsTime().UTC()
		}
		fillTokenRequested(r, &row, &scratch)
		rows = append(rows, row)
	}
	return rows, nil
}
