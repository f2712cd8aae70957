package eventstore

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrPanic marks a handler or projection that panicked on an event; the error is a *PanicError.
// A panic is permanent for that event: it goes to the failed-event log without redelivery.
var ErrPanic = errors.New("eventstore: handler panicked")

// permanentError wraps an error that no redelivery can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks a handler error as permanent: the event goes straight to the failed-event log
// instead of being redelivered. Use it for events that no retry can fix (a payload the handler
// refuses, a reference that can never resolve); transient errors are returned unwrapped. Permanent
// returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent or is a panic
// recovered from a handler (ErrPanic).
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, ErrPanic)
}

// PanicError is a panic recovered from a handler or projection. errors.Is(err, ErrPanic) holds.
type PanicError struct {
	// Value is what the handler panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

// Error implements error.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Is reports whether target is ErrPanic.
func (e *PanicError) Is(target error) bool { return target == ErrPanic }

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// safeCall runs fn on ev, turning a panic into a *PanicError.
func safeCall(ctx context.Context, fn Handler, ev Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, ev)
}

// panicAttrs returns the stack of a recovered panic as log attributes, none for other errors.
func panicAttrs(err error) []any {
	var pe *PanicError
	if errors.As(err, &pe) {
		return []any{"stack", string(pe.Stack)}
	}
	return nil
}
