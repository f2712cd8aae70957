package testkit

import (
	"context"
	"testing"
	"time"
)

// DefaultWait is how long Eventually waits when the caller names no deadline: long enough for a
// machine whose cores are busy with other builds, never a measure of speed.
const DefaultWait = 60 * time.Second

// pollEvery is the pause between two checks of Eventually.
const pollEvery = 25 * time.Millisecond

// Eventually checks cond until it reports true, and fails the test with what and the last error cond
// returned when timeout passes first (DefaultWait when timeout is 0) or the test's context ends. It is
// the one way tests wait for something asynchronous: a deadline, never a count of attempts or a sleep.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if err := Poll(contextOf(t), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll checks cond until it reports true and returns nil, or returns an error carrying cond's last
// error once timeout (DefaultWait when 0) has passed or ctx is done.
func Poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	if timeout <= 0 {
		timeout = DefaultWait
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return &PollError{Timeout: timeout, Last: last}
			}
			return &PollError{Timeout: timeout}
		case <-tick.C:
		}
	}
}

// PollError is Poll's error when the condition never held.
type PollError struct {
	// Timeout is how long Poll waited.
	Timeout time.Duration
	// Last is the condition's last error, if it returned one.
	Last error
}

// Error implements error.
func (e *PollError) Error() string {
	if e.Last != nil {
		return "not done after " + e.Timeout.String() + "; last error: " + e.Last.Error()
	}
	return "not done after " + e.Timeout.String()
}

// Unwrap returns the condition's last error.
func (e *PollError) Unwrap() error { return e.Last }

// contextOf is the test's context when it has one (testing.T, B and F all do).
func contextOf(t testing.TB) context.Context {
	if c, ok := t.(interface{ Context() context.Context }); ok {
		return c.Context()
	}
	return context.Background()
}
