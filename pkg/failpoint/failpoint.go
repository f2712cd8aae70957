// Package failpoint holds the named seams where the fault-injection suite breaks the platform on
// purpose: between two steps whose order matters (an append and its reply, a credential and its undo,
// a telemetry commit, a workflow start). A seam is a call to Inject with one of the names in Seams.
//
// Failpoints are compiled in and free when off: Inject is one atomic load until a failpoint is armed.
// A process arms them from the environment at start (FromEnv reads AGENTID_FAILPOINTS), tests in the
// same process with Enable.
//
//	AGENTID_FAILPOINTS="eventstore/append-before-reply=1*exit;issuer/telemetry-before-commit=error"
//
// An action is one of
//
//	error        Inject returns an error wrapping ErrInjected
//	panic        Inject panics
//	exit         the process kills itself with SIGKILL, as `kill -9` would: no deferred cleanup
//	pause(DUR)   Inject waits DUR (a Go duration) or until its context ends
//	off          nothing
//
// optionally prefixed by "N*" to fire only on the first N hits (then the failpoint is off).
package failpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Env is the environment variable FromEnv reads.
const Env = "AGENTID_FAILPOINTS"

// The seams. Each name says where it sits; docs/faults.md describes what breaking each one proves.
const (
	// AppendBeforeReply is in the event store, after JetStream acknowledged an append and before the
	// caller hears of it.
	AppendBeforeReply = "eventstore/append-before-reply"
	// CreateClientBeforeUndo is in the provisioning workflow's activities, after the issuer created
	// an agent's client and before the activity checks whether it must take the client back.
	CreateClientBeforeUndo = "lifecycle/create-client-before-undo"
	// TelemetryBeforeCommit is in the monitor, before a batch of telemetry rows is committed.
	TelemetryBeforeCommit = "monitor/telemetry-before-commit"
	// TelemetryAfterCommit is in the monitor, after a batch of telemetry rows is committed and before
	// its events are acknowledged.
	TelemetryAfterCommit = "monitor/telemetry-after-commit"
	// WorkflowBeforeStart is in the lifecycle service, before it starts a workflow for an event.
	WorkflowBeforeStart = "lifecycle/workflow-before-start"
	// WorkflowAfterStart is in the lifecycle service, after Temporal accepted a workflow start and
	// before the event that asked for it is acknowledged.
	WorkflowAfterStart = "lifecycle/workflow-after-start"
)

// Seams lists every failpoint name Inject accepts.
var Seams = []string{
	AppendBeforeReply, CreateClientBeforeUndo, TelemetryBeforeCommit, TelemetryAfterCommit,
	WorkflowBeforeStart, WorkflowAfterStart,
}

// ErrInjected is the error an "error" failpoint returns (wrapped with the failpoint's name).
var ErrInjected = errors.New("failpoint: injected error")

type kind int

const (
	kindOff kind = iota
	kindError
	kindPanic
	kindExit
	kindPause
)

// action is one armed failpoint.
type action struct {
	kind    kind
	spec    string // as armed, for Armed
	pause   time.Duration
	limited bool
	left    atomic.Int64 // hits left when limited
}

var (
	armed  atomic.Bool
	mu     sync.RWMutex
	points = map[string]*action{}
	// kill ends the process for an "exit" action; tests replace it.
	kill = killSelf
)

// Inject runs the failpoint name if it is armed: it returns nil when it is off (the common case, one
// atomic load), an error wrapping ErrInjected for "error", waits for "pause", panics for "panic" and
// kills the process for "exit".
func Inject(ctx context.Context, name string) error {
	if !armed.Load() {
		return nil
	}
	mu.RLock()
	a := points[name]
	mu.RUnlock()
	if a == nil || a.kind == kindOff {
		return nil
	}
	if a.limited && a.left.Add(-1) < 0 {
		return nil
	}
	switch a.kind {
	case kindError:
		return fmt.Errorf("%s: %w", name, ErrInjected)
	case kindPanic:
		panic("failpoint " + name)
	case kindExit:
		fmt.Fprintf(os.Stderr, "failpoint %s: killing the process\n", name)
		kill()
	case kindPause:
		t := time.NewTimer(a.pause)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return nil
}

// FromEnv arms the failpoints named in AGENTID_FAILPOINTS; an unknown name or action is an error
// naming the variable, so that a mistyped fault never passes for a fault that did not happen.
func FromEnv() error {
	spec := strings.TrimSpace(os.Getenv(Env))
	if spec == "" {
		return nil
	}
	if err := Set(spec); err != nil {
		return fmt.Errorf("%s: %w", Env, err)
	}
	return nil
}

// Armed lists the armed failpoints as name=action, sorted; empty when none is. Processes log it at
// start, loudly: a failpoint left armed outside a test breaks the process on purpose.
func Armed() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for name, a := range points {
		if a.kind != kindOff {
			out = append(out, name+"="+a.spec)
		}
	}
	sort.Strings(out)
	return out
}

// Set replaces the armed failpoints with spec ("name=action;name=action"); an empty spec disarms all.
func Set(spec string) error {
	next := map[string]*action{}
	for _, part := range strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == ',' }) {
		name, act, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%q: want name=action", part)
		}
		if !known(name) {
			return fmt.Errorf("unknown failpoint %q (known: %s)", name, strings.Join(sorted(), ", "))
		}
		a, err := parseAction(act)
		if err != nil {
			return fmt.Errorf("failpoint %s: %w", name, err)
		}
		next[name] = a
	}
	mu.Lock()
	points = next
	armed.Store(len(next) > 0)
	mu.Unlock()
	return nil
}

// Enable arms one failpoint for a test and returns the function that disarms it again.
func Enable(name, act string) (disable func(), err error) {
	if !known(name) {
		return nil, fmt.Errorf("unknown failpoint %q", name)
	}
	a, err := parseAction(act)
	if err != nil {
		return nil, fmt.Errorf("failpoint %s: %w", name, err)
	}
	mu.Lock()
	next := make(map[string]*action, len(points)+1)
	for k, v := range points {
		next[k] = v
	}
	next[name] = a
	points = next
	armed.Store(true)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		next := make(map[string]*action, len(points))
		for k, v := range points {
			if k != name {
				next[k] = v
			}
		}
		points = next
		armed.Store(len(next) > 0)
	}, nil
}

func parseAction(s string) (*action, error) {
	s = strings.TrimSpace(s)
	a := &action{spec: s}
	if n, rest, ok := strings.Cut(s, "*"); ok {
		count, err := strconv.Atoi(n)
		if err != nil || count < 1 {
			return nil, fmt.Errorf("%q: the count before * must be a positive integer", s)
		}
		a.limited = true
		a.left.Store(int64(count))
		s = rest
	}
	switch {
	case s == "off":
		a.kind = kindOff
	case s == "error":
		a.kind = kindError
	case s == "panic":
		a.kind = kindPanic
	case s == "exit":
		a.kind = kindExit
	case strings.HasPrefix(s, "pause(") && strings.HasSuffix(s, ")"):
		d, err := time.ParseDuration(s[len("pause(") : len(s)-1])
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q: pause needs a positive duration, e.g. pause(2s)", s)
		}
		a.kind, a.pause = kindPause, d
	default:
		return nil, fmt.Errorf("unknown action %q (want error, panic, exit, pause(DUR) or off, optionally N*action)", s)
	}
	return a, nil
}

func known(name string) bool {
	for _, s := range Seams {
		if s == name {
			return true
		}
	}
	return false
}

func sorted() []string {
	s := append([]string(nil), Seams...)
	sort.Strings(s)
	return s
}
