// Package eventsapi serves agentid.events.v1.EventsService: one tenant's aggregate events, read from
// the JetStream aggregate streams and streamed to an authorized subscriber over gRPC.
//
// Only subjects agentid.<tenant>.> of the aggregate streams (TENANTS, AGENTS, CREDENTIALS, POLICY,
// LIFECYCLE, REVOCATIONS) are ever read, with the tenant taken from the request after the caller was
// authorized for it; client input never becomes a subject wildcard. Each stream is read by an
// ordered consumer into a bounded buffer; events of one stream are delivered in stream order, and the
// streams are merged by event time (while catching up, the earliest stored event of every stream
// goes first; live events go out as they arrive). Every response carries a cursor holding the
// position reached in every stream, so a resumed subscription delivers exactly the events after it.
// Secret fields (the sealed private key of signingkey.created) are removed before anything is sent;
// a payload of a type the server does not know is not sent at all.
package eventsapi
