package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// DefaultInsertTimeout bounds one insert of a batch into the telemetry store (Config.InsertTimeout).
const DefaultInsertTimeout = 30 * time.Second

// registerInsertTimeouts registers the counter of inserts that timed out.
func registerInsertTimeouts(r prometheus.Registerer) prometheus.Counter {
	return observability.Register(r, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "monitor_telemetry_insert_timeouts_total",
		Help: "Inserts into the telemetry store that took longer than the insert timeout; their events were not acknowledged and are redelivered.",
	}))
}

// storeBatch inserts the rows of one group commit. It is not cancelled when the consumer stops
// (acknowledged work is never left half done) but has its own deadline, Config.InsertTimeout, so a
// hung store cannot hold ingest or a shutdown: a timed-out insert is an error (counted), and the
// batch's events are redelivered. A batch holding a redelivered event is marked
// store.WithRedelivered, so the store checks it against its stored rows. Every row was normalized
// by Handle (store.Normalize), so the batch is marked store.WithNormalized: the store does not
// validate it again.
func (c *Consumer) storeBatch(ctx context.Context, batch []insertReq, rows []store.Event) error {
	ictx := store.WithNormalized(context.WithoutCancel(ctx))
	for _, r := range batch {
		if r.redelivered {
			ictx = store.WithRedelivered(ictx)
			break
		}
	}
	ictx, cancel := context.WithTimeout(ictx, c.cfg.InsertTimeout)
	defer cancel()
	err := c.cfg.Store.Insert(ictx, rows)
	if err != nil && errors.Is(ictx.Err(), context.DeadlineExceeded) {
		c.insertTimeouts.Inc()
		return fmt.Errorf("ingest: insert of %d rows timed out after %s: %w", len(rows), c.cfg.InsertTimeout, err)
	}
	return err
}
