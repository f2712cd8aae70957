// Package registry is the core of the registry service: the Tenant and Agent aggregates (write
// models over their JetStream event histories), the commands that change them, the derivation of an
// agent's risk tier, and the in-memory read models the queries are answered from.
//
// A command loads its aggregate's events, decides on a new event from the aggregate's state, appends
// it conditionally on the aggregate's version and retries on a conflict; it then waits for the read
// model to reach the appended event, so the caller reads its own write. Nothing is appended when a
// command fails.
package registry
