package eventstore

import "time"

// SetSyncHook makes r call f as each of its position syncs starts.
func SetSyncHook(r *Runner, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncHook = f
}

// Waiters returns how many WaitFor calls wait on r.
func Waiters(r *Runner) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiters
}

// WithRedriveClaimTimeout sets how long a work consumer's claim on a requested retry holds
// (default redriveClaimTimeout).
func WithRedriveClaimTimeout(d time.Duration) Option { return func(s *Store) { s.claimTimeout = d } }

// WithConsumerInfoRefresh sets how often Consume reads its consumer's info from the server
// (default consumerInfoRefresh).
func WithConsumerInfoRefresh(d time.Duration) Option { return func(s *Store) { s.infoRefresh = d } }

// PauseGroupCommit holds s's group committers before their next batch, so that appends queue up,
// until the returned resume is called. Group commit must be enabled.
func PauseGroupCommit(s *Store) (resume func()) {
	g := s.group.Load()
	g.mu.Lock()
	g.paused = true
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.paused = false
		g.mu.Unlock()
		g.resumed.Broadcast()
	}
}

// PendingGroupCommits returns how many appends wait for a batch on stream.
func PendingGroupCommits(s *Store, stream string) int {
	g := s.group.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	if q := g.queues[stream]; q != nil {
		return len(q.pending)
	}
	return 0
}
