package service

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
)

// Revocations is the push revocation of the platform's own API: a Denylist the gRPC server's verifier
// checks, kept current from the REVOCATIONS stream by a feed that runs as a Task. The process must not
// serve before the feed has caught up (ReadyCheck): a token revoked before the start would be accepted.
type Revocations struct {
	// Denylist is what JWKSVerifierConfig.Revocations (and the issuer) check.
	Denylist *authn.Denylist
	// Feed keeps Denylist current.
	Feed *authn.RevocationFeed
}

// NewRevocations returns a Denylist fed from every tenant's revocations on js, and exports the feed's
// progress as Prometheus metrics (agentid_revocations_*).
func NewRevocations(js jetstream.JetStream, log *slog.Logger) (*Revocations, error) {
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: js, Denylist: deny, Logger: log})
	if err != nil {
		return nil, err
	}
	registerRevocationMetrics()
	currentFeed.Store(feed)
	return &Revocations{Denylist: deny, Feed: feed}, nil
}

// Task runs the feed until ctx is done.
func (r *Revocations) Task() Task { return r.Feed.Run }

// ReadyCheck keeps the process NOT_SERVING until the feed has caught up with the stream.
func (r *Revocations) ReadyCheck() ReadyCheck {
	return ReadyCheck{Name: "revocations", Ready: r.Feed.Ready}
}

// currentFeed is the feed the metrics describe: the last one built in this process (one per process
// outside tests).
var currentFeed atomic.Pointer[authn.RevocationFeed]

var registerRevocationMetricsOnce sync.Once

func registerRevocationMetrics() {
	registerRevocationMetricsOnce.Do(func() {
		for _, c := range RevocationMetrics(currentFeed.Load) {
			// A registration error (a name taken by another collector) only loses the metric.
			_ = prometheus.DefaultRegisterer.Register(c)
		}
	})
}

// RevocationMetrics returns the agentid_revocations_* collectors: the progress of the feed that feed
// returns when scraped (zeros while it returns nil). NewRevocations registers them for the process's
// feed; a component that runs a feed of its own (the issuer without a shared denylist) registers them
// on its registry.
func RevocationMetrics(feed func() *authn.RevocationFeed) []prometheus.Collector {
	stat := func(f func(authn.RevocationFeedStats) float64) func() float64 {
		return func() float64 {
			current := feed()
			if current == nil {
				return 0
			}
			return f(current.Stats())
		}
	}
	gauge := func(name, help string, f func(authn.RevocationFeedStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f))
	}
	counter := func(name, help string, f func(authn.RevocationFeedStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, stat(f))
	}
	return []prometheus.Collector{
		counter("agentid_revocations_applied_total", "Revocation events applied to the process's denylist.",
			func(s authn.RevocationFeedStats) float64 { return float64(s.Applied) }),
		counter("agentid_revocations_rejected_total", "Revocation events that could not be applied (malformed or on a foreign tenant's subject).",
			func(s authn.RevocationFeedStats) float64 { return float64(s.Rejected) }),
		gauge("agentid_revocations_entries", "Entries the process's denylist holds.",
			func(s authn.RevocationFeedStats) float64 { return float64(s.Entries) }),
		gauge("agentid_revocations_position", "REVOCATIONS stream sequence of the last event the feed received.",
			func(s authn.RevocationFeedStats) float64 { return float64(s.Position) }),
		gauge("agentid_revocations_pending_messages", "Revocation events stored but not yet received by the feed.",
			func(s authn.RevocationFeedStats) float64 { return float64(s.Pending) }),
		gauge("agentid_revocations_delay_seconds", "Time between the storage and the application of the last revocation.",
			func(s authn.RevocationFeedStats) float64 { return s.Delay.Seconds() }),
		gauge("agentid_revocations_last_contact_seconds", "Seconds since the feed last heard from the REVOCATIONS stream (a delivery or a poll of its idle consumer); +Inf before the first contact. Alert well above the contact interval (5s): the denylist may be missing revocations.",
			func(s authn.RevocationFeedStats) float64 {
				if s.LastContact.IsZero() {
					return math.Inf(1)
				}
				return time.Since(s.LastContact).Seconds()
			}),
		gauge("agentid_revocations_caught_up", "1 once the feed has applied every revocation stored when it started.",
			func(s authn.RevocationFeedStats) float64 {
				if s.Caught {
					return 1
				}
				return 0
			}),
	}
}
