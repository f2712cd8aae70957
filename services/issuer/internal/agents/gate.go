package agents

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// DefaultCatchUpTimeout bounds how long a refusal waits for the projection to catch up.
const DefaultCatchUpTimeout = 2 * time.Second

// GateConfig configures a Gate.
type GateConfig struct {
	// State is the projection. Required.
	State *State
	// LastSequence returns the AGENTS stream's last sequence as the server knows it now. Required.
	LastSequence func(ctx context.Context) (uint64, error)
	// WaitFor blocks until the projection has applied the stream up to seq (eventstore.Runner.WaitFor).
	// Required.
	WaitFor func(ctx context.Context, seq uint64) error
	// Timeout bounds the catch-up of one check; default DefaultCatchUpTimeout.
	Timeout time.Duration
}

// Gate tells the token endpoint an agent's state. ACTIVE comes from the projection without I/O;
// any other answer is confirmed first: the gate waits until the projection has applied the stream up
// to its last sequence as of the check, and looks again. So "agents get" showing ACTIVE followed by a
// token request never fails because the issuer's projection lags. Concurrent checks share one
// catch-up at a time. It is safe for concurrent use.
type Gate struct {
	state   *State
	lastSeq func(ctx context.Context) (uint64, error)
	waitFor func(ctx context.Context, seq uint64) error
	timeout time.Duration

	mu      sync.Mutex
	running bool    // a goroutine runs catch-ups
	pending *flight // the next catch-up, not started: it reads the last sequence after every joiner arrived
	waiting int     // checks waiting for a catch-up
}

// flight is one catch-up that several checks wait for.
type flight struct {
	done chan struct{}
	err  error
}

// NewGate returns a gate.
func NewGate(cfg GateConfig) (*Gate, error) {
	if cfg.State == nil || cfg.LastSequence == nil || cfg.WaitFor == nil {
		return nil, errors.New("agents: GateConfig needs State, LastSequence and WaitFor")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("agents: catch-up timeout %s must not be negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultCatchUpTimeout
	}
	return &Gate{state: cfg.State, lastSeq: cfg.LastSequence, waitFor: cfg.WaitFor, timeout: cfg.Timeout}, nil
}

// Check returns the state of the agent named name. ACTIVE is answered from the projection at once.
// Any other state is answered after the projection has caught up with the stream as it was when
// Check was called; when that could not be confirmed within the timeout (or before ctx ends), Check
// returns the projection's state, which is not ACTIVE, and an error saying why.
func (g *Gate) Check(ctx context.Context, name string) (registryv1.AgentState, error) {
	if st := g.state.AgentState(name); st == registryv1.AgentState_AGENT_STATE_ACTIVE {
		return st, nil
	}
	err := g.catchUp(ctx)
	return g.state.AgentState(name), err
}

// ExpireTime returns the agent's expire time from the projection, without I/O; ok is false when it
// has none. The token endpoint refuses tokens from then on and caps a token's exp at it, so expiry
// holds at the issuer even while the lifecycle (whose TTL run retires the agent) is down.
func (g *Gate) ExpireTime(name string) (time.Time, bool) { return g.state.ExpireTime(name) }

// catchUp joins the pending catch-up (starting the goroutine that runs them if needed) and waits for
// it, at most the gate's timeout.
func (g *Gate) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	g.mu.Lock()
	if g.pending == nil {
		g.pending = &flight{done: make(chan struct{})}
	}
	f := g.pending
	if !g.running {
		g.running = true
		go g.run()
	}
	g.waiting++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
	}()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("agents: projection catch-up: %w", ctx.Err())
	}
}

// run performs the pending catch-ups one after the other until none is pending.
func (g *Gate) run() {
	for {
		g.mu.Lock()
		f := g.pending
		g.pending = nil
		if f == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		f.err = g.catchUpOnce(ctx)
		cancel()
		close(f.done)
	}
}

func (g *Gate) catchUpOnce(ctx context.Context) error {
	last, err := g.lastSeq(ctx)
	if err != nil {
		return fmt.Errorf("agents: reading the stream's last sequence: %w", err)
	}
	if err := g.waitFor(ctx, last); err != nil {
		return fmt.Errorf("agents: waiting for the projection to reach %d: %w", last, err)
	}
	return nil
}
