package registry

import "context"

type updateRequestIDKey struct{}

// WithUpdateRequestID returns ctx carrying the request id (idempotency key) of the update being
// admitted, from which an Admission derives the request id of its policy decision: a retried update
// then gets the decision its first attempt got.
func WithUpdateRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, updateRequestIDKey{}, id)
}

// UpdateRequestID is the request id WithUpdateRequestID put in ctx, "" when there is none.
func UpdateRequestID(ctx context.Context) string {
	id, _ := ctx.Value(updateRequestIDKey{}).(string)
	return id
}

type dryRunKey struct{}

// WithDryRun returns ctx marking the admission asked in it as a dry run (a validate_only command):
// the policy decision is evaluated but not recorded, and no request id is derived for it.
func WithDryRun(ctx context.Context) context.Context {
	return context.WithValue(ctx, dryRunKey{}, true)
}

// DryRun reports whether ctx was marked by WithDryRun.
func DryRun(ctx context.Context) bool {
	v, _ := ctx.Value(dryRunKey{}).(bool)
	return v
}
