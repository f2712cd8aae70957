package testkit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/testkit"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	err := testkit.Poll(t.Context(), time.Minute, func() (bool, error) {
		return calls.Add(1) == 3, nil
	})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls.Load())
	}
}

func TestPollReportsTheLastErrorAtTheDeadline(t *testing.T) {
	boom := errors.New("still booting")
	err := testkit.Poll(t.Context(), 100*time.Millisecond, func() (bool, error) { return false, boom })
	var pe *testkit.PollError
	if !errors.As(err, &pe) || !errors.Is(err, boom) || pe.Timeout != 100*time.Millisecond {
		t.Fatalf("Poll = %v, want a PollError wrapping %v", err, boom)
	}
}

func TestPollStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := testkit.Poll(ctx, time.Hour, func() (bool, error) { return false, nil }); err == nil {
		t.Fatal("Poll on a cancelled context succeeded")
	}
}
