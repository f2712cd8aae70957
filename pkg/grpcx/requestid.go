// Package grpcx is the one way to build the platform's gRPC servers and clients: request ids,
// panic recovery, bearer-token authentication, error mapping through pkg/errs, JSON access logs,
// Prometheus metrics, health and reflection.
package grpcx

import (
	"context"

	"github.com/google/uuid"
	"google.golang.org/grpc/metadata"
)

// RequestIDHeader is the metadata key carrying the request id, in both directions.
const RequestIDHeader = "x-request-id"

const maxRequestIDLen = 128

type requestIDKey struct{}

// WithRequestID returns a context carrying the request id id; clients built by Dial forward it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id of ctx, or "" if it has none.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// incomingRequestID returns the caller's well-formed request id, or a new UUIDv7.
func incomingRequestID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if ids := md.Get(RequestIDHeader); len(ids) > 0 && validRequestID(ids[0]) {
			return ids[0]
		}
	}
	return newRequestID()
}

func newRequestID() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

// validRequestID accepts 1-128 printable ASCII characters without spaces, so ids are safe to log
// and to use as idempotency keys.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}
