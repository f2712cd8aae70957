package eventstore

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid marks input the store refuses; the error is an *InvalidError naming the field.
	ErrInvalid = errors.New("eventstore: invalid input")
	// ErrConflict marks an append whose expected version no longer matches the aggregate; the error
	// is a *ConflictError. Re-read the aggregate and decide again.
	ErrConflict = errors.New("eventstore: version conflict")
	// ErrIdempotencyKeyReused marks an append whose idempotency key already produced a different
	// event (another aggregate or event type).
	ErrIdempotencyKeyReused = errors.New("eventstore: idempotency key already used for a different event")
	// ErrUnknownSchema marks an event whose data schema has no registered protobuf message type.
	ErrUnknownSchema = errors.New("eventstore: unknown data schema")
	// ErrMalformedEvent marks a stored message that lacks the envelope headers of an event.
	ErrMalformedEvent = errors.New("eventstore: malformed event")
)

// InvalidError says which input field was refused and why. errors.Is(err, ErrInvalid) holds.
type InvalidError struct {
	// Field is the offending field, e.g. "aggregate_id" or "metadata.actor.kind".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *InvalidError) Error() string {
	return fmt.Sprintf("eventstore: invalid %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ConflictError describes a failed conditional append. errors.Is(err, ErrConflict) holds.
type ConflictError struct {
	// Aggregate is the aggregate's subject wildcard, agentid.<tenant>.<type>.<id>.>.
	Aggregate string
	// Expected is the version the append was conditioned on.
	Expected uint64
	// Actual is the aggregate's version as read after the conflict (0 = the aggregate does not exist).
	Actual uint64
}

// Error implements error.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("eventstore: version conflict on %s: expected %d, actual %d", e.Aggregate, e.Expected, e.Actual)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
