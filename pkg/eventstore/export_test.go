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
