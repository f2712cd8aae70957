// Package eventstore is the platform's event store on NATS JetStream.
//
// Each aggregate's history is the set of events on its subjects,
// agentid.<tenant>.<aggregate-type>.<aggregate-id>.<event-name>. Appends are conditional on the
// aggregate's version (the stream sequence of its last event) and idempotent on a caller-chosen key.
// Events carry a CloudEvents envelope as NATS headers and a protobuf payload.
//
// Read models are Projections driven by a Runner (in-memory, rebuilt from the stream on start, or
// resumed from a remembered position). Side effects run in durable work consumers (Store.Consume)
// shared by all replicas of a service. Events that a projection or consumer cannot handle are kept
// in the failed-event log (Store.FailedEvents) instead of being dropped.
//
// RunEmbeddedServer starts an in-process nats-server with JetStream for the all-in-one binary and
// for tests (see pkg/testkit).
package eventstore
