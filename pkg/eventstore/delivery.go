package eventstore

import "context"

// deliveriesKey is the context key of a Handler's delivery count.
type deliveriesKey struct{}

// withDeliveries records the delivery count of the event a Handler runs on.
func withDeliveries(ctx context.Context, n uint64) context.Context {
	return context.WithValue(ctx, deliveriesKey{}, n)
}

// Deliveries returns how many times the event a work consumer's Handler runs on has been delivered
// (1 the first time; more when it was redelivered: its earlier handling may have done its work
// without being acknowledged), or 0 outside a Handler.
func Deliveries(ctx context.Context) uint64 {
	n, _ := ctx.Value(deliveriesKey{}).(uint64)
	return n
}
