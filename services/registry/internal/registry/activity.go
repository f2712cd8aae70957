package registry

import (
	"fmt"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// EventAgentActive is the type of the activity event the monitor publishes at most once per agent
// and hour on ActivitySubject, with a monitorv1.HourlyActivity payload (the hour) and the agent's
// resource name as ce-subject. It is telemetry, not an agent aggregate event: it lives in the
// TELEMETRY stream (limits-based retention); the registry keeps the latest hour in its activity
// checkpoint.
const EventAgentActive = "agent.active"

// ActivitySubject is the subject of tenant's activity events.
func ActivitySubject(tenant string) string { return "telemetry." + tenant + ".agent.active" }

// ActivityFilter matches the activity events of every tenant.
const ActivityFilter = "telemetry.*.agent.active"

// ActivityHour returns the hour (unix seconds) an activity event reports.
func ActivityHour(e eventstore.Event) (int64, error) {
	d, err := eventstore.DecodeAs[*monitorv1.HourlyActivity](e)
	if err != nil {
		return 0, err
	}
	if d.GetHour() == nil || d.GetHour().CheckValid() != nil {
		return 0, eventstore.Permanent(fmt.Errorf("registry: activity event %s without a valid hour", e.ID))
	}
	return d.GetHour().AsTime().Truncate(time.Hour).Unix(), nil
}
