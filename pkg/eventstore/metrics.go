package eventstore

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics of work consumers, projection runners and the failed-event log. They are shared by
// every Store of the process and registered once per registerer (WithRegisterer).
var (
	metricConsumerPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_consumer_pending_messages",
		Help: "Events of a work consumer not yet delivered (the durable consumer's NumPending).",
	}, []string{"consumer", "stream"})
	metricConsumerRedeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_consumer_redeliveries_total",
		Help: "Deliveries of an event to a work consumer after its first one, in this process.",
	}, []string{"consumer"})
	metricConsumerLongRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_consumer_long_retries_total",
		Help: "Failed deliveries of events that had already been delivered LongRetryDeliveries times or more, in this process.",
	}, []string{"consumer"})
	metricFailedRecorded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_failed_events_total",
		Help: "Events recorded in the failed-event log by this process, by handler (consumer or projection) and kind.",
	}, []string{"handler", "kind"})
	metricFailedRecordErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_failed_event_record_errors_total",
		Help: "Attempts of this process to record an event in the failed-event log that failed (the event is kept and retried), by handler and kind.",
	}, []string{"handler", "kind"})
	metricFailedOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_failed_events",
		Help: "Entries of the failed-event log for a handler running in this process.",
	}, []string{"handler"})
	metricProjectionPosition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_projection_position",
		Help: "Stream sequence up to which a projection is complete.",
	}, []string{"projection", "stream"})
	metricProjectionLastSeq = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_projection_stream_last_sequence",
		Help: "Last sequence of the stream a projection follows, as last seen by its runner.",
	}, []string{"projection", "stream"})
	metricProjectionSyncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_projection_position_syncs_total",
		Help: "Position syncs (a stream info and a get of the next matching message, at the stream leader) run for the WaitFor calls of a projection, in this process.",
	}, []string{"projection", "stream"})
	metricProjectionHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_projection_held_sequence",
		Help: "Stream sequence of the event a projection is held at because the failed-event log cannot record its failure (0: not held). Alert on any non-zero value.",
	}, []string{"projection", "stream"})
	metricProjectionLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentid_eventstore_projection_lag_events",
		Help: "Events of a projection's subjects stored in the stream but not applied yet.",
	}, []string{"projection", "stream"})

	groupCommitBatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentid_eventstore_group_commit_batches_total",
		Help: "Atomic batches of appends published by group commit, by stream and outcome (committed, or fallback: refused or unacknowledged as a whole, its appends published one by one).",
	}, []string{"stream", "outcome"})
	groupCommitEvents = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentid_eventstore_group_commit_batch_events",
		Help:    "Appends per group-commit batch.",
		Buckets: []float64{2, 4, 8, 16, 32, 64, 128, 256, 512, 1000},
	}, []string{"stream"})
	groupCommitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "agentid_eventstore_group_commit_seconds",
		Help:    "Time from publishing a group-commit batch to its acknowledgement (stored and synced) or failure.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"stream"})

	unacked = &unackedTracker{byConsumer: map[string]map[uint64]time.Time{}, floor: map[string]time.Time{}}
)

// registered holds the registerers the metrics are registered with.
var registered sync.Map // prometheus.Registerer -> struct{}

// registerMetrics registers the package's metrics with reg once.
func registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	if _, done := registered.LoadOrStore(reg, struct{}{}); done {
		return
	}
	for _, c := range []prometheus.Collector{
		metricConsumerPending, metricConsumerRedeliveries, metricConsumerLongRetries,
		metricFailedRecorded, metricFailedRecordErrors, metricFailedOpen,
		metricProjectionPosition, metricProjectionLastSeq, metricProjectionSyncs, metricProjectionHeld, metricProjectionLag, unacked,
		groupCommitBatches, groupCommitEvents, groupCommitSeconds,
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				registered.Delete(reg)
				return
			}
		}
	}
}

// unackedTracker reports per work consumer the age of the oldest event it has not acknowledged:
// the older of the first event after the consumer's ack floor (as last read from the server) and
// the deliveries being handled in this process.
type unackedTracker struct {
	mu         sync.Mutex
	next       uint64
	byConsumer map[string]map[uint64]time.Time // deliveries being handled, by id
	floor      map[string]time.Time            // stored time of the first event after the ack floor
}

var unackedDesc = prometheus.NewDesc("agentid_eventstore_consumer_oldest_unacked_age_seconds",
	"Age (since it was stored) of the oldest event a work consumer has not acknowledged, whether being handled or waiting for a redelivery; 0 when none.",
	[]string{"consumer"}, nil)

// start records a delivery of an event stored at ts and returns the function that ends it.
func (t *unackedTracker) start(consumer string, ts time.Time) func() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	id := t.next
	m := t.byConsumer[consumer]
	if m == nil {
		m = map[uint64]time.Time{}
		t.byConsumer[consumer] = m
	}
	m[id] = ts
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.byConsumer[consumer], id)
	}
}

// setOldest records the stored time of the consumer's first unacknowledged event after its ack
// floor; zero when there is none.
func (t *unackedTracker) setOldest(consumer string, ts time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ts.IsZero() {
		delete(t.floor, consumer)
		return
	}
	t.floor[consumer] = ts
	if t.byConsumer[consumer] == nil {
		t.byConsumer[consumer] = map[uint64]time.Time{}
	}
}

// Describe implements prometheus.Collector.
func (t *unackedTracker) Describe(ch chan<- *prometheus.Desc) { ch <- unackedDesc }

// Collect implements prometheus.Collector.
func (t *unackedTracker) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for consumer, m := range t.byConsumer {
		age := 0.0
		if ts, ok := t.floor[consumer]; ok {
			age = max(age, now.Sub(ts).Seconds())
		}
		for _, ts := range m {
			age = max(age, now.Sub(ts).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(unackedDesc, prometheus.GaugeValue, age, consumer)
	}
}
