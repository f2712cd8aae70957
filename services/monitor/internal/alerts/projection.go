package alerts

import (
	"context"
	"fmt"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

var _ eventstore.Projection = (*Projection)(nil)

// Projection applies the ALERTS stream to a Store. Every monitor replica runs its own (an ordered
// consumer replaying the stream from its start), so after a restart the store holds again every
// alert the stream still keeps (30 days by default).
type Projection struct {
	store *Store
}

// NewProjection returns a Projection filling s.
func NewProjection(s *Store) *Projection { return &Projection{store: s} }

// Name implements eventstore.Projection.
func (p *Projection) Name() string { return ConsumerName }

// Apply implements eventstore.Projection: an `alert.raised` event whose alert belongs to the
// event's tenant is stored; other event types are skipped; a malformed alert is an error (it ends
// in the failed-event log).
func (p *Projection) Apply(_ context.Context, e eventstore.Event) error {
	if e.Type != EventType {
		return nil
	}
	msg, err := eventstore.DecodeAs[*monitorv1.AlertRaised](e)
	if err != nil {
		return fmt.Errorf("alerts: event %s: %w", e.ID, err)
	}
	a := msg.GetAlert()
	switch {
	case a == nil:
		return fmt.Errorf("alerts: event %s carries no alert", e.ID)
	case a.GetTenant() != e.Metadata.Tenant:
		return fmt.Errorf("alerts: event %s of tenant %q carries an alert of tenant %q", e.ID, e.Metadata.Tenant, a.GetTenant())
	case a.GetAlertId() != e.ID:
		return fmt.Errorf("alerts: event %s carries alert %q (the ids must be equal)", e.ID, a.GetAlertId())
	case a.GetDetectTime() == nil || a.GetDetectTime().CheckValid() != nil:
		return fmt.Errorf("alerts: alert %s has no valid detect_time", a.GetAlertId())
	}
	p.store.Put(a)
	return nil
}
