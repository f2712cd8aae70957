package errs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/errs"
)

var errSecret = errors.New("dial tcp 10.0.0.7:4222: connection refused (password=hunter2)")

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("status %v has no ErrorInfo", st.Proto())
	return nil
}

func TestToStatusFromStatusRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		err      *errs.Error
		wantCode codes.Code
		wantMsg  string
	}{
		{"invalid argument", errs.InvalidArgument("agent.display_name", "must not be empty"), codes.InvalidArgument, "must not be empty"},
		{"not found", errs.NotFound("AGENT_NOT_FOUND", "agent not found"), codes.NotFound, "agent not found"},
		{"already exists", errs.AlreadyExists("AGENT_EXISTS", "agent already exists"), codes.AlreadyExists, "agent already exists"},
		{"failed precondition", errs.FailedPrecondition("AGENT_RETIRED", "agent is retired"), codes.FailedPrecondition, "agent is retired"},
		{"permission denied", errs.PermissionDenied("MISSING_ROLE", "requires tenant-admin"), codes.PermissionDenied, "requires tenant-admin"},
		{"unauthenticated", errs.Unauthenticated("TOKEN_EXPIRED", "token expired"), codes.Unauthenticated, "token expired"},
		{"conflict", errs.Conflict("ETAG_MISMATCH", "agent changed, re-read"), codes.Aborted, "agent changed, re-read"},
		{"unavailable", errs.Unavailable("EVENTSTORE_UNAVAILABLE", "try again", errSecret), codes.Unavailable, "try again"},
		{"resource exhausted", errs.ResourceExhausted("RATE_LIMITED", "slow down"), codes.ResourceExhausted, "slow down"},
		{"internal", errs.Internal(errSecret), codes.Internal, "internal error"},
		{"internal with custom message", &errs.Error{Kind: errs.KindInternal, Reason: "PROJECTION_BROKEN", Message: "db at 10.0.0.7 down", Cause: errSecret}, codes.Internal, "internal error"},
		{"metadata", errs.NotFound("AGENT_NOT_FOUND", "agent not found").WithMetadata("agent", "tenants/acme/agents/a1"), codes.NotFound, "agent not found"},
		{"default message", &errs.Error{Kind: errs.KindNotFound, Reason: "X_NOT_FOUND"}, codes.NotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := errs.ToStatus(fmt.Errorf("handler: %w", tt.err))
			if st.Code() != tt.wantCode {
				t.Fatalf("code = %v, want %v", st.Code(), tt.wantCode)
			}
			if st.Message() != tt.wantMsg {
				t.Fatalf("message = %q, want %q", st.Message(), tt.wantMsg)
			}
			if strings.Contains(fmt.Sprint(st.Proto()), "hunter2") {
				t.Fatalf("internal cause leaked into status: %v", st.Proto())
			}
			info := errorInfo(t, st)
			if info.GetDomain() != errs.Domain {
				t.Errorf("domain = %q, want %q", info.GetDomain(), errs.Domain)
			}
			if info.GetReason() != tt.err.Reason {
				t.Errorf("reason = %q, want %q", info.GetReason(), tt.err.Reason)
			}

			back := errs.FromStatus(st.Err())
			if back.Kind != tt.err.Kind {
				t.Errorf("FromStatus kind = %v, want %v", back.Kind, tt.err.Kind)
			}
			if back.Reason != tt.err.Reason {
				t.Errorf("FromStatus reason = %q, want %q", back.Reason, tt.err.Reason)
			}
			if back.Field != tt.err.Field {
				t.Errorf("FromStatus field = %q, want %q", back.Field, tt.err.Field)
			}
			if back.Message != tt.wantMsg {
				t.Errorf("FromStatus message = %q, want %q", back.Message, tt.wantMsg)
			}
			for k, v := range tt.err.Metadata {
				if back.Metadata[k] != v {
					t.Errorf("FromStatus metadata[%q] = %q, want %q", k, back.Metadata[k], v)
				}
			}
			if !errs.Is(st.Err(), tt.err.Kind) {
				t.Errorf("Is(status, %v) = false", tt.err.Kind)
			}
		})
	}
}

func TestInvalidArgumentHasBadRequest(t *testing.T) {
	st := errs.ToStatus(errs.InvalidArgument("agent.owner", "owner is required"))
	var br *errdetails.BadRequest
	for _, d := range st.Details() {
		if b, ok := d.(*errdetails.BadRequest); ok {
			br = b
		}
	}
	if br == nil || len(br.GetFieldViolations()) != 1 {
		t.Fatalf("want one BadRequest field violation, got %v", st.Details())
	}
	if got := br.GetFieldViolations()[0].GetField(); got != "agent.owner" {
		t.Fatalf("field = %q, want agent.owner", got)
	}
	if errorInfo(t, st).GetReason() != "INVALID_ARGUMENT" {
		t.Fatalf("reason = %q", errorInfo(t, st).GetReason())
	}
}

func TestToStatusOtherErrors(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   codes.Code
		wantMsg    string
		wantReason string
	}{
		{"nil", nil, codes.OK, "", ""},
		{"plain error", errSecret, codes.Internal, "internal error", "INTERNAL"},
		{"wrapped plain error", fmt.Errorf("load agent: %w", errSecret), codes.Internal, "internal error", "INTERNAL"},
		{"canceled", fmt.Errorf("append: %w", context.Canceled), codes.Canceled, "request canceled", "CANCELED"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "deadline exceeded", "DEADLINE_EXCEEDED"},
		{"internal caused by cancel", errs.Internal(context.Canceled), codes.Canceled, "request canceled", "CANCELED"},
		{"status passes through", status.Error(codes.NotFound, "nope"), codes.NotFound, "nope", ""},
		{"wrapped status is internal", fmt.Errorf("secret context: %w", status.Error(codes.NotFound, "nope")), codes.Internal, "internal error", "INTERNAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := errs.ToStatus(tt.err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			if tt.wantReason != "" && errorInfo(t, st).GetReason() != tt.wantReason {
				t.Fatalf("reason = %q, want %q", errorInfo(t, st).GetReason(), tt.wantReason)
			}
		})
	}
}

func TestFromStatusForeignStatuses(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantKind   errs.Kind
		wantReason string
	}{
		{"unknown", status.Error(codes.Unknown, "boom"), errs.KindInternal, "INTERNAL"},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), errs.KindUnavailable, "UNAVAILABLE"},
		{"aborted", status.Error(codes.Aborted, "retry"), errs.KindConflict, "CONFLICT"},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), errs.KindUnavailable, "DEADLINE_EXCEEDED"},
		{"canceled", status.Error(codes.Canceled, "gone"), errs.KindUnavailable, "CANCELED"},
		{"unimplemented", status.Error(codes.Unimplemented, "no"), errs.KindFailedPrecondition, "UNIMPLEMENTED"},
		{"out of range", status.Error(codes.OutOfRange, "page"), errs.KindInvalidArgument, "INVALID_ARGUMENT"},
		{"plain error", errSecret, errs.KindInternal, "INTERNAL"},
		{"context deadline", context.DeadlineExceeded, errs.KindUnavailable, "DEADLINE_EXCEEDED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := errs.FromStatus(tt.err)
			if e.Kind != tt.wantKind || e.Reason != tt.wantReason {
				t.Fatalf("got %v/%s, want %v/%s", e.Kind, e.Reason, tt.wantKind, tt.wantReason)
			}
			if !errors.Is(e, tt.err) {
				t.Fatalf("FromStatus must keep the original error as cause")
			}
		})
	}
	if errs.FromStatus(nil) != nil {
		t.Fatal("FromStatus(nil) must be nil")
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unavailable", errs.Unavailable("NATS_DOWN", "later", nil), true},
		{"conflict", errs.Conflict("ETAG_MISMATCH", "re-read"), true},
		{"resource exhausted", errs.ResourceExhausted("RATE_LIMITED", "slow"), true},
		{"internal", errs.Internal(errSecret), true},
		{"invalid argument", errs.InvalidArgument("x", "bad"), false},
		{"not found", errs.NotFound("AGENT_NOT_FOUND", "no"), false},
		{"permission denied", errs.PermissionDenied("MISSING_ROLE", "no"), false},
		{"unauthenticated", errs.Unauthenticated("TOKEN_EXPIRED", "no"), false},
		{"failed precondition", errs.FailedPrecondition("AGENT_RETIRED", "no"), false},
		{"already exists", errs.AlreadyExists("AGENT_EXISTS", "no"), false},
		{"status unavailable over the wire", errs.ToStatus(errs.Unavailable("X", "y", nil)).Err(), true},
		{"status not found over the wire", errs.ToStatus(errs.NotFound("X", "y")).Err(), false},
		{"status canceled", status.Error(codes.Canceled, "gone"), false},
		{"status deadline", status.Error(codes.DeadlineExceeded, "slow"), true},
		{"context canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errs.Retryable(tt.err); got != tt.want {
				t.Fatalf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorHelpers(t *testing.T) {
	base := errs.NotFound("AGENT_NOT_FOUND", "agent not found")
	withCause := base.WithCause(errSecret)
	if base.Cause != nil {
		t.Fatal("WithCause must not modify the receiver")
	}
	if !errors.Is(withCause, errSecret) {
		t.Fatal("Unwrap must expose the cause")
	}
	if !strings.Contains(withCause.Error(), "hunter2") || !strings.Contains(withCause.Error(), "AGENT_NOT_FOUND") {
		t.Fatalf("Error() is for logs and should carry reason and cause: %q", withCause.Error())
	}
	m1 := base.WithMetadata("a", "1")
	m2 := m1.WithMetadata("b", "2")
	if len(m1.Metadata) != 1 || len(m2.Metadata) != 2 || base.Metadata != nil {
		t.Fatalf("WithMetadata must copy: base=%v m1=%v m2=%v", base.Metadata, m1.Metadata, m2.Metadata)
	}
	if errs.KindOf(fmt.Errorf("x: %w", withCause)) != errs.KindNotFound {
		t.Fatal("KindOf must see wrapped *Error")
	}
	if errs.KindOf(errSecret) != errs.KindInternal {
		t.Fatal("KindOf(plain) must be Internal")
	}
	if errs.Is(nil, errs.KindInternal) {
		t.Fatal("Is(nil, Internal) must be false")
	}
	if got := status.Code(fmt.Errorf("x: %w", base)); got != codes.NotFound {
		t.Fatalf("status.Code on wrapped *Error = %v, want NotFound", got)
	}
	if errs.Conflict("X", "y").Kind.String() != "CONFLICT" {
		t.Fatal("Kind.String")
	}
}

func TestRetryAfterTravelsAsRetryInfo(t *testing.T) {
	err := errs.Unavailable("READ_MODEL_LAGGING", "catching up", nil).WithRetryAfter(1500 * time.Millisecond)
	st := errs.ToStatus(err)
	var found bool
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			found = ri.GetRetryDelay().AsDuration() == 1500*time.Millisecond
		}
	}
	if !found {
		t.Fatalf("status %v carries no RetryInfo of 1.5s", st.Details())
	}
	back := errs.FromStatus(st.Err())
	if back.RetryAfter != 1500*time.Millisecond || back.Reason != "READ_MODEL_LAGGING" {
		t.Fatalf("FromStatus = %+v, want the retry delay and reason back", back)
	}
	if d := errs.ToStatus(errs.Unavailable("X", "no hint", nil)).Details(); len(d) != 1 {
		t.Fatalf("an error without RetryAfter has details %v, want only ErrorInfo", d)
	}
}
