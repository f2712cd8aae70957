package service

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Readier is a Component that must not take traffic before it is ready, typically until its
// projections have caught up with their streams. Run reports it (and the process) NOT_SERVING until
// Ready returns nil.
type Readier interface {
	// Ready blocks until the component is ready or ctx is done.
	Ready(ctx context.Context) error
}

// ReadyCheck is a readiness condition of the process beside its components' (e.g. "bootstrap done").
type ReadyCheck struct {
	// Name says what is awaited; /readyz names the checks that have not passed yet.
	Name string
	// Ready blocks until the condition holds or ctx is done.
	Ready func(ctx context.Context) error
}

// DefaultNATSGrace is how long the NATS connection may be disconnected before the process reports
// NOT_SERVING (RunConfig.NATSGrace).
const DefaultNATSGrace = 5 * time.Second

// readyRetryDelay is the pause before asking a Readier again after it failed while ctx was live.
const readyRetryDelay = time.Second

// readiness decides the serving status of the process and of each component, and publishes it to the
// gRPC health server and /readyz. The process is ready when every Readier and ReadyCheck has
// returned, NATS has not been disconnected for longer than the grace period, and it is not stopping.
// A component is ready on the same terms, counting only its own Ready.
type readiness struct {
	health HealthSetter
	log    *slog.Logger

	mu        sync.Mutex
	order     []string            // components and checks in start order, for messages
	pending   map[string]bool     // components and checks whose Ready has not returned nil
	services  map[string][]string // component name -> its health names (name and gRPC services)
	common    []string            // gRPC services of no component (health, reflection): follow ""
	natsDown  time.Duration       // > 0 while NATS has been down for longer than the grace period
	stopping  bool
	published map[string]healthpb.HealthCheckResponse_ServingStatus
	ready     bool
	onReady   func()
}

func newReadiness(health HealthSetter, log *slog.Logger, onReady func()) *readiness {
	return &readiness{
		health: health, log: log, onReady: onReady,
		pending:   map[string]bool{},
		services:  map[string][]string{},
		published: map[string]healthpb.HealthCheckResponse_ServingStatus{},
	}
}

// addComponent registers a component by name with the gRPC services it registered; it is pending
// until markReady when it implements Readier.
func (r *readiness) addComponent(name string, grpcServices []string, waits bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order = append(r.order, name)
	r.services[name] = append([]string{name}, grpcServices...)
	if waits {
		r.pending[name] = true
	}
}

// addCheck registers a process-wide check, pending until markReady.
func (r *readiness) addCheck(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order = append(r.order, name)
	r.pending[name] = true
}

// owned reports whether the gRPC service name belongs to a component.
func (r *readiness) owned(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, names := range r.services {
		if slices.Contains(names[1:], name) {
			return true
		}
	}
	return false
}

// setCommon names the gRPC services that belong to no component.
func (r *readiness) setCommon(names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.common = names
}

func (r *readiness) markReady(name string) {
	r.mu.Lock()
	delete(r.pending, name)
	r.mu.Unlock()
	r.log.Info("ready", "component", name)
	r.publish()
}

func (r *readiness) setNATSDown(down time.Duration) {
	r.mu.Lock()
	was := r.natsDown
	r.natsDown = down
	r.mu.Unlock()
	switch {
	case was == 0 && down > 0:
		r.log.Error("NATS unreachable: reporting NOT_SERVING until it is back", "disconnected_for", down.Round(time.Millisecond).String())
	case was > 0 && down == 0:
		r.log.Info("NATS reachable again")
	}
	r.publish()
}

func (r *readiness) stop() {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	r.publish()
}

// notReadyReason says why the process is not ready, or "" when it is; r.mu must be held.
func (r *readiness) notReadyReason() string {
	var why []string
	if r.stopping {
		why = append(why, "shutting down")
	}
	if r.natsDown > 0 {
		why = append(why, fmt.Sprintf("NATS disconnected for %s", r.natsDown.Round(time.Second)))
	}
	var waiting []string
	for _, n := range r.order {
		if r.pending[n] {
			waiting = append(waiting, n)
		}
	}
	if len(waiting) > 0 {
		why = append(why, "waiting for "+strings.Join(waiting, ", "))
	}
	return strings.Join(why, "; ")
}

// publish sets every health name's status from the current state and calls onReady the first time
// the process is ready.
func (r *readiness) publish() {
	r.mu.Lock()
	base := !r.stopping && r.natsDown == 0
	overall := base && len(r.pending) == 0
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{"": servingStatus(overall)}
	for _, n := range r.common {
		want[n] = servingStatus(overall)
	}
	for comp, names := range r.services {
		st := servingStatus(base && !r.pending[comp])
		for _, n := range names {
			want[n] = st
		}
	}
	var changed []string
	for n, st := range want {
		if old, ok := r.published[n]; !ok || old != st {
			r.published[n] = st
			changed = append(changed, n)
		}
	}
	if r.health != nil {
		// Under the lock, so that concurrent publishes cannot leave an older status in place.
		for _, n := range slices.Sorted(slices.Values(changed)) {
			r.health.SetServingStatus(n, want[n])
		}
	}
	r.ready = overall
	onReady := r.onReady
	if overall {
		r.onReady = nil // once
	} else {
		onReady = nil
	}
	reason := r.notReadyReason()
	r.mu.Unlock()
	if onReady != nil {
		onReady()
	}
	if slices.Contains(changed, "") {
		if overall {
			r.log.Info("serving: every component is ready")
		} else {
			r.log.Warn("not serving", "reason", reason)
		}
	}
}

func servingStatus(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// serveReadyz answers 200 when the process is ready and 503 with the reason otherwise.
func (r *readiness) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	ready, reason := r.ready, r.notReadyReason()
	r.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ready {
		if reason == "" {
			reason = "starting"
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %s\n", reason)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// await calls ready until it returns nil (then marks name ready) or ctx is done; a failure while ctx
// is live is logged and retried, since readiness must not end the process.
func (r *readiness) await(ctx context.Context, name string, ready func(context.Context) error) {
	for {
		err := ready(ctx)
		if err == nil {
			r.markReady(name)
			return
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("readiness check failed; retrying", "component", name, "error", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-time.After(readyRetryDelay):
		}
	}
}

// watchNATS reports NATS down once nc has not been connected for longer than grace, and up again
// as soon as it reconnects, until ctx is done.
func (r *readiness) watchNATS(ctx context.Context, nc *nats.Conn, grace time.Duration) {
	events := nc.StatusChanged()
	defer nc.RemoveStatusListener(events)
	// Status events are dropped when the listener is slow, so the status is also polled.
	poll := time.NewTicker(min(max(grace/4, 10*time.Millisecond), time.Second))
	defer poll.Stop()
	var downSince time.Time
	for {
		if nc.IsConnected() {
			downSince = time.Time{}
			r.setNATSDownIfChanged(0)
		} else {
			if downSince.IsZero() {
				downSince = time.Now()
			}
			if d := time.Since(downSince); d > grace {
				r.setNATSDownIfChanged(d)
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil // removed elsewhere: polling alone still sees every change
			}
		case <-poll.C:
		}
	}
}

// setNATSDownIfChanged calls setNATSDown when NATS goes down or comes back (not on every poll).
func (r *readiness) setNATSDownIfChanged(down time.Duration) {
	r.mu.Lock()
	same := (r.natsDown > 0) == (down > 0)
	if same && down > 0 {
		r.natsDown = down // keep the reported duration current for /readyz
	}
	r.mu.Unlock()
	if !same {
		r.setNATSDown(down)
	}
}
