package errs

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the google.rpc.ErrorInfo domain of every error the platform returns.
const Domain = "agentid.dev"

const (
	reasonCanceled         = "CANCELED"
	reasonDeadlineExceeded = "DEADLINE_EXCEEDED"
	reasonUnimplemented    = "UNIMPLEMENTED"
)

var kindCodes = [...]codes.Code{
	KindInternal:           codes.Internal,
	KindInvalidArgument:    codes.InvalidArgument,
	KindNotFound:           codes.NotFound,
	KindAlreadyExists:      codes.AlreadyExists,
	KindFailedPrecondition: codes.FailedPrecondition,
	KindPermissionDenied:   codes.PermissionDenied,
	KindUnauthenticated:    codes.Unauthenticated,
	KindConflict:           codes.Aborted,
	KindUnavailable:        codes.Unavailable,
	KindResourceExhausted:  codes.ResourceExhausted,
}

// Code returns the gRPC code the kind maps to (KindConflict maps to Aborted).
func (k Kind) Code() codes.Code {
	if k < 0 || int(k) >= len(kindCodes) {
		return codes.Internal
	}
	return kindCodes[k]
}

// GRPCStatus lets grpc-go and status.FromError/status.Code understand an *Error directly.
func (e *Error) GRPCStatus() *status.Status { return ToStatus(e) }

type grpcStatuser interface{ GRPCStatus() *status.Status }

// ToStatus converts err into the gRPC status returned to callers. An *Error anywhere in the chain keeps
// its code, reason (google.rpc.ErrorInfo, domain agentid.dev, with its metadata), message and, for
// KindInvalidArgument, a google.rpc.BadRequest naming the field. context.Canceled and
// context.DeadlineExceeded become Canceled and DeadlineExceeded. An error that is itself a gRPC status
// is passed through unchanged. Anything else becomes KindInternal with a generic message: causes never
// reach the caller. A nil error gives an OK status.
func ToStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Kind == KindInternal || e.Kind.Code() == codes.Internal {
			if st := contextStatus(e.Cause); st != nil {
				return st
			}
			return internalStatus(e.reason(), e.Metadata)
		}
		return errorStatus(e)
	}
	if st := contextStatus(err); st != nil {
		return st
	}
	if gs, ok := err.(grpcStatuser); ok && gs.GRPCStatus() != nil {
		return gs.GRPCStatus()
	}
	return internalStatus(KindInternal.String(), nil)
}

func contextStatus(err error) *status.Status {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return withInfo(status.New(codes.Canceled, "request canceled"), reasonCanceled, nil)
	case errors.Is(err, context.DeadlineExceeded):
		return withInfo(status.New(codes.DeadlineExceeded, "deadline exceeded"), reasonDeadlineExceeded, nil)
	}
	return nil
}

func internalStatus(reason string, md map[string]string) *status.Status {
	return withInfo(status.New(codes.Internal, KindInternal.defaultMessage()), reason, md)
}

func errorStatus(e *Error) *status.Status {
	st := status.New(e.Kind.Code(), e.message())
	info := &errdetails.ErrorInfo{Reason: e.reason(), Domain: Domain, Metadata: e.Metadata}
	if e.Kind == KindInvalidArgument && e.Field != "" {
		br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field:       e.Field,
			Description: e.message(),
			Reason:      e.reason(),
		}}}
		if withDetails, err := st.WithDetails(info, br); err == nil {
			return withDetails
		}
		return st
	}
	details := []protoadapt.MessageV1{info}
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

func withInfo(st *status.Status, reason string, md map[string]string) *status.Status {
	withDetails, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: md})
	if err != nil {
		return st
	}
	return withDetails
}

// FromStatus converts an error received from a gRPC call back into an *Error: Kind from the code
// (Aborted→KindConflict, OutOfRange→KindInvalidArgument, Unimplemented→KindFailedPrecondition,
// Canceled/DeadlineExceeded→KindUnavailable with reason CANCELED/DEADLINE_EXCEEDED, Unknown and DataLoss→
// KindInternal), Reason and Metadata from google.rpc.ErrorInfo, Field from google.rpc.BadRequest and the
// status message as Message. The original error is kept as Cause. An *Error in the chain is returned
// as is, a non-status error becomes KindInternal, and nil stays nil.
func FromStatus(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var gs grpcStatuser
	if !errors.As(err, &gs) || gs.GRPCStatus() == nil {
		switch {
		case errors.Is(err, context.Canceled):
			return &Error{Kind: KindUnavailable, Reason: reasonCanceled, Message: "request canceled", Cause: err}
		case errors.Is(err, context.DeadlineExceeded):
			return &Error{Kind: KindUnavailable, Reason: reasonDeadlineExceeded, Message: "deadline exceeded", Cause: err}
		}
		return Internal(err)
	}
	st := gs.GRPCStatus()
	out := &Error{Message: st.Message(), Cause: err}
	switch st.Code() {
	case codes.OK:
		return nil
	case codes.Canceled:
		out.Kind, out.Reason = KindUnavailable, reasonCanceled
	case codes.DeadlineExceeded:
		out.Kind, out.Reason = KindUnavailable, reasonDeadlineExceeded
	case codes.Unimplemented:
		out.Kind, out.Reason = KindFailedPrecondition, reasonUnimplemented
	case codes.OutOfRange:
		out.Kind = KindInvalidArgument
	case codes.Aborted:
		out.Kind = KindConflict
	case codes.Unknown, codes.DataLoss, codes.Internal:
		out.Kind = KindInternal
	default:
		out.Kind = kindFromCode(st.Code())
	}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetReason() != "" {
				out.Reason = d.GetReason()
			}
			if len(d.GetMetadata()) > 0 {
				out.Metadata = d.GetMetadata()
			}
		case *errdetails.BadRequest:
			if v := d.GetFieldViolations(); len(v) > 0 && out.Field == "" {
				out.Field = v[0].GetField()
			}
		case *errdetails.RetryInfo:
			out.RetryAfter = d.GetRetryDelay().AsDuration()
		}
	}
	if out.Reason == "" {
		out.Reason = out.Kind.String()
	}
	return out
}

func kindFromCode(c codes.Code) Kind {
	for k, kc := range kindCodes {
		if kc == c {
			return Kind(k)
		}
	}
	return KindInternal
}
