package workflowstest

import (
	"context"
	"sync"

	"go.temporal.io/api/serviceerror"
)

// Runs is a fake workflows.RunCanceller: it records the workflow ids asked to cancel and answers as
// Temporal does for a run that has ended or never existed (NotFound), unless Running names the id.
type Runs struct {
	mu        sync.Mutex
	running   map[string]bool
	cancelled []string
}

// Running makes the fake treat workflowID as a run in progress, which a cancellation request reaches.
func (r *Runs) Running(workflowID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		r.running = map[string]bool{}
	}
	r.running[workflowID] = true
}

// CancelWorkflow records the request; NotFound unless workflowID is running.
func (r *Runs) CancelWorkflow(_ context.Context, workflowID, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelled = append(r.cancelled, workflowID)
	if !r.running[workflowID] {
		return serviceerror.NewNotFound("workflow execution already completed")
	}
	return nil
}

// Cancelled returns the workflow ids asked to cancel, in order.
func (r *Runs) Cancelled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cancelled...)
}
