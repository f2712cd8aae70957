package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// requestIDOr returns id, or a fresh idempotency key for a mutating command when the user gave none,
// so that every mutation can be retried safely and the message of an unknown outcome can name it.
func requestIDOr(id, command string) string {
	if id != "" {
		return id
	}
	return command + "-" + strings.ToLower(rand.Text())
}

// outcomeUnknown reports whether err leaves it open whether the server carried out the command: the
// call timed out, was cancelled, or the server was unavailable (it may have applied the command before
// the answer was lost). Every other error is a definite refusal.
func outcomeUnknown(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return true // a transport failure without a status: nothing says the server did not act
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return true
	}
	return false
}

// unknownOutcomeError is the error of a mutating command whose outcome is unknown: it says so and names
// the request id to retry with.
type unknownOutcomeError struct {
	command   string
	requestID string
	retry     string
	err       error
}

func (e *unknownOutcomeError) Error() string {
	msg := fmt.Sprintf("the outcome of %s is unknown (%s): it may or may not have been applied; retry with --request-id %s",
		e.command, describe(e.err), e.requestID)
	if e.retry != "" {
		msg += " " + e.retry
	}
	return msg + " to apply it at most once"
}

func (e *unknownOutcomeError) Unwrap() error { return e.err }

// mutationError wraps the error of a mutating RPC: an unknown outcome names the request id to retry
// with (and what else the retry needs, in retry); a definite error is returned as it is.
func mutationError(command, requestID, retry string, err error) error {
	if err == nil || !outcomeUnknown(err) {
		return err
	}
	return &unknownOutcomeError{command: command, requestID: requestID, retry: retry, err: err}
}
