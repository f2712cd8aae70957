// Package errs is the platform's one error vocabulary: a small set of kinds with stable reason codes,
// a message that is safe to show to callers, and an internal cause that is logged but never returned.
//
// Kinds are the Kind* constants; the constructors of the same names (NotFound, Conflict, ...) build
// errors of that kind. Handlers return *Error values; one interceptor (pkg/grpcx) turns them into gRPC statuses with
// ToStatus, and gRPC clients turn statuses back into *Error values with FromStatus.
package errs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"
)

// Kind classifies an error by what the caller can do about it. The zero value is KindInternal.
type Kind int

// The kinds of error. Each maps to exactly one gRPC code (see ToStatus).
const (
	// KindInternal is a failure the caller cannot fix; its cause is logged, never returned.
	KindInternal Kind = iota
	// KindInvalidArgument means the request is malformed; Field names the offending field.
	KindInvalidArgument
	// KindNotFound means the resource does not exist or is not visible to the caller.
	KindNotFound
	// KindAlreadyExists means a create collided with an existing resource.
	KindAlreadyExists
	// KindFailedPrecondition means the resource is not in a state that allows the operation.
	KindFailedPrecondition
	// KindPermissionDenied means the caller is authenticated but lacks a role.
	KindPermissionDenied
	// KindUnauthenticated means the caller's credentials are missing or invalid.
	KindUnauthenticated
	// KindConflict means a concurrent change won (etag or expected-version mismatch); re-read and retry.
	KindConflict
	// KindUnavailable means a dependency is temporarily unreachable; retry with backoff.
	KindUnavailable
	// KindResourceExhausted means a quota or rate limit was hit; retry later.
	KindResourceExhausted
)

var kindNames = [...]string{
	KindInternal:           "INTERNAL",
	KindInvalidArgument:    "INVALID_ARGUMENT",
	KindNotFound:           "NOT_FOUND",
	KindAlreadyExists:      "ALREADY_EXISTS",
	KindFailedPrecondition: "FAILED_PRECONDITION",
	KindPermissionDenied:   "PERMISSION_DENIED",
	KindUnauthenticated:    "UNAUTHENTICATED",
	KindConflict:           "CONFLICT",
	KindUnavailable:        "UNAVAILABLE",
	KindResourceExhausted:  "RESOURCE_EXHAUSTED",
}

var defaultMessages = [...]string{
	KindInternal:           "internal error",
	KindInvalidArgument:    "invalid argument",
	KindNotFound:           "not found",
	KindAlreadyExists:      "already exists",
	KindFailedPrecondition: "failed precondition",
	KindPermissionDenied:   "permission denied",
	KindUnauthenticated:    "unauthenticated",
	KindConflict:           "conflict, retry",
	KindUnavailable:        "service unavailable, retry later",
	KindResourceExhausted:  "resource exhausted, retry later",
}

// String returns the kind's UPPER_SNAKE name, which is also its default reason code.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("KIND(%d)", int(k))
	}
	return kindNames[k]
}

func (k Kind) defaultMessage() string {
	if k < 0 || int(k) >= len(defaultMessages) {
		return defaultMessages[KindInternal]
	}
	return defaultMessages[k]
}

// Error is a classified error. Message and Reason go to the caller; Cause stays on the server.
type Error struct {
	// Kind decides the gRPC code.
	Kind Kind
	// Reason is a stable UPPER_SNAKE code clients may branch on, e.g. AGENT_NOT_FOUND.
	Reason string
	// Message is a human-readable explanation that is safe to return to the caller.
	Message string
	// Field names the offending request field for KindInvalidArgument (e.g. "agent.display_name").
	Field string
	// Metadata carries small, caller-safe key/value facts (returned in google.rpc.ErrorInfo).
	Metadata map[string]string
	// RetryAfter, when positive, tells the caller to try again after it (google.rpc.RetryInfo): for
	// Unavailable errors that are expected to clear, such as a read model catching up.
	RetryAfter time.Duration
	// Cause is the internal error behind this one; it is logged, never returned to callers.
	Cause error
}

// Error describes the error for logs, including the internal cause.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.String())
	if e.Reason != "" && e.Reason != e.Kind.String() {
		b.WriteString(" ")
		b.WriteString(e.Reason)
	}
	b.WriteString(": ")
	b.WriteString(e.message())
	if e.Field != "" {
		b.WriteString(" (field ")
		b.WriteString(e.Field)
		b.WriteString(")")
	}
	if e.Cause != nil {
		b.WriteString(": ")
		b.WriteString(e.Cause.Error())
	}
	return b.String()
}

// Unwrap returns the internal cause so errors.Is/As see through an *Error.
func (e *Error) Unwrap() error { return e.Cause }

// WithCause returns a copy of e with the internal cause set.
func (e *Error) WithCause(cause error) *Error {
	c := e.clone()
	c.Cause = cause
	return c
}

// WithMetadata returns a copy of e with key=value added to its caller-visible metadata.
func (e *Error) WithMetadata(key, value string) *Error {
	c := e.clone()
	c.Metadata = maps.Clone(e.Metadata)
	if c.Metadata == nil {
		c.Metadata = make(map[string]string, 1)
	}
	c.Metadata[key] = value
	return c
}

// WithRetryAfter returns a copy of e that tells the caller to retry after d (google.rpc.RetryInfo).
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	c := e.clone()
	c.RetryAfter = d
	return c
}

func (e *Error) clone() *Error {
	c := *e
	return &c
}

func (e *Error) message() string {
	if e.Message != "" {
		return e.Message
	}
	return e.Kind.defaultMessage()
}

func (e *Error) reason() string {
	if e.Reason != "" {
		return e.Reason
	}
	return e.Kind.String()
}

// New returns an error of the given kind with a reason code and a caller-safe message.
func New(kind Kind, reason, msg string) *Error {
	return &Error{Kind: kind, Reason: reason, Message: msg}
}

// InvalidArgument reports bad input in the named request field; its reason is INVALID_ARGUMENT.
func InvalidArgument(field, msg string) *Error {
	return &Error{Kind: KindInvalidArgument, Reason: KindInvalidArgument.String(), Message: msg, Field: field}
}

// NotFound reports a resource that does not exist or that the caller may not know about.
func NotFound(reason, msg string) *Error { return New(KindNotFound, reason, msg) }

// AlreadyExists reports a create that collided with an existing resource.
func AlreadyExists(reason, msg string) *Error { return New(KindAlreadyExists, reason, msg) }

// FailedPrecondition reports an operation the resource's current state does not allow.
func FailedPrecondition(reason, msg string) *Error { return New(KindFailedPrecondition, reason, msg) }

// PermissionDenied reports an authenticated caller without the needed role.
func PermissionDenied(reason, msg string) *Error { return New(KindPermissionDenied, reason, msg) }

// Unauthenticated reports missing or invalid credentials.
func Unauthenticated(reason, msg string) *Error { return New(KindUnauthenticated, reason, msg) }

// Conflict reports a lost optimistic-concurrency race (etag or expected version).
func Conflict(reason, msg string) *Error { return New(KindConflict, reason, msg) }

// Unavailable reports a temporarily unreachable dependency; cause is kept for the logs.
func Unavailable(reason, msg string, cause error) *Error {
	e := New(KindUnavailable, reason, msg)
	e.Cause = cause
	return e
}

// ResourceExhausted reports a quota or rate limit that was hit.
func ResourceExhausted(reason, msg string) *Error { return New(KindResourceExhausted, reason, msg) }

// Internal wraps an unexpected failure; callers only ever see "internal error".
func Internal(cause error) *Error {
	return &Error{Kind: KindInternal, Reason: KindInternal.String(), Message: KindInternal.defaultMessage(), Cause: cause}
}

// KindOf classifies any error: an *Error anywhere in the chain gives its Kind, a gRPC status error is
// classified as FromStatus does, context cancellation and deadlines count as KindUnavailable, and
// everything else (including nil) is KindInternal.
func KindOf(err error) Kind {
	if err == nil {
		return KindInternal
	}
	return FromStatus(err).Kind
}

// Is reports whether err is classified as kind k (see KindOf). A nil error is never any kind.
func Is(err error, k Kind) bool {
	return err != nil && KindOf(err) == k
}

// Retryable reports whether repeating the same call may succeed: Unavailable (including a remote
// deadline), Conflict, ResourceExhausted and Internal are retryable; a cancelled call and every caller
// error (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, PermissionDenied,
// Unauthenticated) are not. It accepts *Error values and gRPC status errors alike.
//
// KindInternal counts as retryable because most internal failures are transient (a storage or network
// hiccup surfacing as an unexpected error) and every mutating command carries an idempotency key, so
// a retry cannot apply twice; retry policies bound the attempts for the rare deterministic bug.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	e := FromStatus(err)
	if e.Reason == reasonCanceled {
		return false
	}
	switch e.Kind {
	case KindUnavailable, KindConflict, KindResourceExhausted, KindInternal:
		return true
	default:
		return false
	}
}
