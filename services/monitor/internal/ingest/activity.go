package ingest

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// TypeAgentActive is the type of the activity event the monitor publishes on
// telemetry.<tenant>.agent.active at most once per agent and hour, when it ingests activity of a
// registered agent (payload monitorv1.HourlyActivity with the hour, ce-subject the agent's resource
// name); activity is a token issued to the agent (store.IsActivity). The registry folds it into the agent's last_active_time. The ingest consumer stores no row
// of it: it is derived from rows stored already.
const TypeAgentActive = "agent.active"

// ActivitySubject is the subject of tenant's activity events.
func ActivitySubject(tenant string) string { return "telemetry." + tenant + ".agent.active" }

// ActivityPublisher stores activity events (eventstore.Store).
type ActivityPublisher interface {
	PublishWithID(ctx context.Context, id, subject, typ, ceSubject string, data proto.Message, md eventstore.Metadata) (eventstore.Event, error)
}

// activityNamespace derives the event id of an agent's activity in one hour, so that the replicas
// of the monitor and a redelivered batch publish one id (which the stream's duplicate window drops).
var activityNamespace = uuid.MustParse("6c3f2f8e-6f0b-4d0e-9a53-3d1f6c0b8a11")

// ActivityID is the event id of agent's activity event for the hour starting at hour.
func ActivityID(tenant, agent string, hour time.Time) string {
	return uuid.NewSHA1(activityNamespace, []byte(tenant+"\x00"+agent+"\x00"+hour.UTC().Format(time.RFC3339))).String()
}

// activityReporter publishes an agent's activity once per hour: it remembers the last hour
// published of each agent seen in the current and the previous hour (older ones are forgotten,
// so memory is bounded by the agents active in two hours).
type activityReporter struct {
	pub ActivityPublisher
	log *slog.Logger

	mu     sync.Mutex
	latest int64            // the latest hour seen (unix seconds)
	sent   map[string]int64 // tenant + "/" + agent name → last hour published
}

func newActivityReporter(pub ActivityPublisher, log *slog.Logger) *activityReporter {
	return &activityReporter{pub: pub, log: log, sent: map[string]int64{}}
}

// observe publishes the activity of agent (a resource name) of tenant at t unless an event for
// that hour or a later one was published. A failure is logged; a later row tries again.
func (a *activityReporter) observe(ctx context.Context, tenant, agent string, t time.Time) {
	hour := t.UTC().Truncate(time.Hour)
	h := hour.Unix()
	key := tenant + "/" + agent
	a.mu.Lock()
	if h <= a.sent[key] {
		a.mu.Unlock()
		return
	}
	if h > a.latest {
		a.latest = h
		for k, v := range a.sent {
			if v < h-3600 {
				delete(a.sent, k)
			}
		}
	}
	a.sent[key] = h
	a.mu.Unlock()
	md := eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}}
	_, err := a.pub.PublishWithID(ctx, ActivityID(tenant, agent, hour), ActivitySubject(tenant), TypeAgentActive, agent,
		&monitorv1.HourlyActivity{Hour: timestamppb.New(hour)}, md)
	if err != nil {
		a.mu.Lock()
		if a.sent[key] == h {
			delete(a.sent, key)
		}
		a.mu.Unlock()
		a.log.WarnContext(ctx, "agent activity not published; the next row of the agent tries again", "tenant", tenant, "agent", agent, "hour", hour, "error", err)
	}
}

// reportActivity reports the activity rows (store.IsActivity: tokens issued) of registered agents.
// Policy decisions (dry runs included), refused token requests and reported accesses are no
// activity of the agent: they would keep an unused agent "active" for the inactivity sweeps.
func (c *Consumer) reportActivity(ctx context.Context, rows []store.Event) {
	if c.activity == nil {
		return
	}
	for i := range rows {
		r := &rows[i]
		if r.AgentKnown && store.IsActivity(r.Kind, r.Outcome) && isAgentName(r.Agent) {
			c.activity.observe(ctx, r.Tenant, r.Agent, r.Time)
		}
	}
}
