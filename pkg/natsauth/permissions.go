// Package natsauth defines the platform's NATS identities (nkey users: the server holds only their
// public keys) and the least-privilege publish/subscribe permissions of each. One function computes
// the permissions of an identity; the embedded server of `agentid dev`, the generator of the compose
// server configuration and the tests all use it.
//
// Every identity receives replies (JetStream API answers, pulled messages, direct gets) only on an
// inbox prefix of its own, InboxPrefix(public key), so that no identity can read another's replies;
// a client connects with ClientOptions, which sets that prefix.
package natsauth

import (
	"fmt"
	"regexp"
	"slices"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/agentid/agentid/pkg/eventstore"
)

// Identity names a NATS user of the platform.
type Identity string

// The platform's identities: one per service, the administrator that sets up the streams (and runs
// the operator's commands), and the verifier of resource servers that follow revocations.
const (
	// Admin creates and updates the streams, the failed-event bucket and the registry's checkpoint
	// bucket, reads every stream and manages the failed-event log; it publishes no event and reads
	// no checkpoint.
	Admin Identity = "admin"
	// Registry appends tenant and agent events.
	Registry Identity = "registry"
	// Issuer appends client, signing key and revocation events, publishes token telemetry and owns
	// the assertion-replay bucket.
	Issuer Identity = "issuer"
	// Policy appends policy events and publishes decision telemetry.
	Policy Identity = "policy"
	// Monitor consumes telemetry and publishes access records.
	Monitor Identity = "monitor"
	// Lifecycle appends lifecycle events and consumes agent events.
	Lifecycle Identity = "lifecycle"
	// Verifier reads the revocations stream only: for resource servers that follow revocations.
	Verifier Identity = "verifier"
)

// ServiceIdentities are the identities of the five services, in a fixed order.
var ServiceIdentities = []Identity{Registry, Issuer, Policy, Monitor, Lifecycle}

// PlatformIdentities are every fixed identity (services, Admin and Verifier), in a fixed order.
var PlatformIdentities = []Identity{Admin, Registry, Issuer, Policy, Monitor, Lifecycle, Verifier}

// IssuerReplayBucket is the issuer's assertion-replay KV bucket (services/issuer/internal/replay).
const IssuerReplayBucket = "issuer-jti"

// IssuerReplayStream is the issuer's replay log (services/issuer/internal/replay.Log): used assertion
// ids, appended in batches by every issuer replica and read by all of them.
const IssuerReplayStream = "ISSUER_JTI"

// IssuerReplaySubject is the one subject of IssuerReplayStream.
const IssuerReplaySubject = "issuer.jti"

// SubscriberPrefix starts the name of a tenant's subscriber identity: subscriber-<tenant>.
const SubscriberPrefix = "subscriber-"

// jsAPI is the JetStream API prefix (no JetStream domain).
const jsAPI = "$JS.API."

// accountInfo is the JetStream account information request, which creating a KV bucket sends first.
const accountInfo = jsAPI + "INFO"

// aggregateStreams hold the aggregates' events, agentid.<tenant>.<type>.<id>.<event>.
var aggregateStreams = []string{
	eventstore.StreamTenants, eventstore.StreamAgents, eventstore.StreamCredentials,
	eventstore.StreamPolicy, eventstore.StreamLifecycle, eventstore.StreamRevocations,
}

// allStreams are every stream EnsureStreams creates, the failed-event bucket's included.
var allStreams = append(slices.Clone(aggregateStreams), eventstore.StreamTelemetry, eventstore.StreamAlerts,
	eventstore.StreamSIEMDeadLetters, kvStream(eventstore.FailedEventsBucket))

// forbidden is denied to every identity, whatever it is allowed: nothing deletes or purges a stream
// (the replay bucket's included), deletes a message, or touches the server's system subjects.
var forbidden = append([]string{
	jsAPI + "STREAM.DELETE.>", jsAPI + "STREAM.MSG.DELETE.>",
	jsAPI + "STREAM.RESTORE.>", jsAPI + "STREAM.SNAPSHOT.>", jsAPI + "ACCOUNT.PURGE.>",
	jsAPI + "SERVER.REMOVE", jsAPI + "META.LEADER.STEPDOWN", "$SYS.>",
}, purges()...)

// purges denies purging the platform's streams and buckets by name (NATS wildcards match whole
// tokens, so "every stream but one" cannot be denied): every identity but the registry is also
// denied its checkpoint bucket, and no identity is allowed a purge of any other stream.
func purges() []string {
	var deny []string
	for _, s := range append(slices.Clone(allStreams), kvStream(IssuerReplayBucket), IssuerReplayStream) {
		deny = append(deny, jsAPI+"STREAM.PURGE."+s)
	}
	return deny
}

// DurableConsumer is a durable (work) consumer that a service creates and the identity that owns it.
type DurableConsumer struct {
	// Name is the consumer's name (eventstore.Store.Consume's name).
	Name string
	// Owner is the only identity that may create, pull from or acknowledge it.
	Owner Identity
}

// DurableConsumers are every durable consumer the services create, each with its owner. An identity
// that may read a stream may create consumers on it (the ordered consumers of projections, the
// events API and the revocation feed have random names), so each durable here is denied by name to
// every platform identity but its owner: another identity could otherwise pull and acknowledge its
// events (a revocation reactor's, so that no revocation is written) or re-create it with another
// filter. A service that adds a durable consumer must add it here.
var DurableConsumers = []DurableConsumer{
	{"issuer-signing-keys", Issuer},               // services/issuer/app SigningKeyConsumer, TENANTS
	{"registry-orphan-reactor", Registry},         // services/registry/internal/registry OrphanReactorConsumer, TENANTS
	{"issuer-revocation-reactor-clients", Issuer}, // services/issuer/internal/revocation, CREDENTIALS
	{"issuer-revocation-reactor-agents", Issuer},  // services/issuer/internal/revocation, AGENTS
	{"monitor-telemetry", Monitor},                // services/monitor/internal/ingest, TELEMETRY
	{"monitor-siem-alerts", Monitor},              // services/monitor/internal/siem, ALERTS
	{"monitor-siem-agents", Monitor},              // services/monitor/internal/siem, AGENTS
	{"monitor-siem-revocations", Monitor},         // services/monitor/internal/siem, REVOCATIONS
	{"lifecycle-agent-events", Lifecycle},         // services/lifecycle/internal/lifecycle, AGENTS
	{"lifecycle-incident-alerts", Lifecycle},      // services/lifecycle/internal/lifecycle, ALERTS
}

// othersDurables denies id every use of the durable consumers it does not own, on any stream:
// creating or updating them (with or without a filter in the subject, and by the legacy durable
// subject), pulling, resetting and acknowledging (both ack subject formats).
func othersDurables(id Identity) []string {
	var deny []string
	for _, d := range DurableConsumers {
		if d.Owner == id {
			continue
		}
		deny = append(deny,
			jsAPI+"CONSUMER.CREATE.*."+d.Name,
			jsAPI+"CONSUMER.CREATE.*."+d.Name+".>",
			jsAPI+"CONSUMER.DURABLE.CREATE.*."+d.Name,
			jsAPI+"CONSUMER.MSG.NEXT.*."+d.Name,
			jsAPI+"CONSUMER.RESET.*."+d.Name,
			"$JS.ACK.*."+d.Name+".>",
			"$JS.ACK.*.*.*."+d.Name+".>",
		)
	}
	return deny
}

// InboxPrefix is the reply-subject prefix of the user with nkey public key user: the user may
// subscribe below it only, and its client must use it (nats.CustomInboxPrefix).
func InboxPrefix(user string) string { return "_INBOX." + user }

// publicKeyPattern is an nkey user public key.
var publicKeyPattern = regexp.MustCompile(`^U[A-Z2-7]{55}$`)

// tenantPattern is a tenant id usable as one subject token and in consumer names.
var tenantPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)

// Permissions returns the permissions of the platform identity id for the user with nkey public
// key user.
func Permissions(id Identity, user string) (*server.Permissions, error) {
	if !publicKeyPattern.MatchString(user) {
		return nil, fmt.Errorf("natsauth: %q is not an nkey user public key", user)
	}
	var pub []string
	switch id {
	case Admin:
		for _, s := range allStreams {
			pub = append(pub, jsAPI+"STREAM.CREATE."+s, jsAPI+"STREAM.UPDATE."+s)
			pub = append(pub, readStream(s)...)
		}
		pub = append(pub, kvWrite(eventstore.FailedEventsBucket)...)
		// It creates the registry's checkpoint bucket and keeps its replicas and size limit
		// (eventstore.WithCheckpointBucket); Permissions denies it the bucket's content.
		pub = append(pub, checkpointConfig...)
		// It lists every stream and reads the configuration and state of each, the issuer's replay
		// bucket included (operators and the fault suite's invariants check replica counts).
		pub = append(pub, accountInfo, jsAPI+"STREAM.NAMES", jsAPI+"STREAM.LIST", jsAPI+"STREAM.INFO.*")
	case Registry:
		// It reads every aggregate stream: it serves the tenants' event subscriptions (pkg/eventsapi),
		// narrowed to one tenant's subjects by the server after authorizing the caller.
		pub = serviceBase(aggregateStreams...)
		pub = append(pub, appendTo(eventstore.AggregateTenant, eventstore.AggregateAgent)...)
		// It folds the monitor's activity events into last_active_time: consumers of TELEMETRY
		// filtered to them (the server checks the filter against the subject), not the rest of it.
		pub = append(pub,
			jsAPI+"CONSUMER.CREATE."+eventstore.StreamTelemetry+".*."+activityFilter,
			jsAPI+"CONSUMER.INFO."+eventstore.StreamTelemetry+".*",
			jsAPI+"CONSUMER.MSG.NEXT."+eventstore.StreamTelemetry+".*")
		// It keeps its read models' checkpoints in its object store bucket, which the admin creates:
		// it may not create or update the bucket's stream (an update could add sources or subjects
		// and so capture streams it is denied). Replacing an object purges the old one's chunks, so
		// it may purge that stream alone.
		pub = append(pub, checkpointBucket()...)
	case Issuer:
		pub = serviceBase(eventstore.StreamCredentials, eventstore.StreamAgents, eventstore.StreamTenants)
		pub = append(pub, appendTo(eventstore.AggregateClient, eventstore.AggregateSigningKey, eventstore.AggregateRevocation)...)
		pub = append(pub, "telemetry.*.token.requested")
		// The issuer creates and updates its own replay bucket; it can neither delete nor purge it.
		pub = append(pub, jsAPI+"STREAM.CREATE."+kvStream(IssuerReplayBucket), jsAPI+"STREAM.UPDATE."+kvStream(IssuerReplayBucket))
		pub = append(pub, readStream(kvStream(IssuerReplayBucket))...)
		pub = append(pub, kvWrite(IssuerReplayBucket)...)
		// And its replay log, likewise.
		pub = append(pub, jsAPI+"STREAM.CREATE."+IssuerReplayStream, jsAPI+"STREAM.UPDATE."+IssuerReplayStream)
		pub = append(pub, readStream(IssuerReplayStream)...)
		pub = append(pub, IssuerReplaySubject)
		pub = append(pub, accountInfo)
	case Policy:
		pub = serviceBase(eventstore.StreamPolicy)
		pub = append(pub, appendTo(eventstore.AggregatePolicy)...)
		pub = append(pub, "telemetry.*.policy.decided")
	case Monitor:
		// The SIEM export reads ALERTS and AGENTS (REVOCATIONS comes with serviceBase; not
		// CREDENTIALS, which holds sealed signing keys: a disabled client is seen in its
		// tokens.revoked), publishes OCSF copies on siem.ocsf.<tenant> (no stream captures them)
		// and dead letters to SIEM_DLQ. Detection publishes alerts on alerts.<tenant>.<detector>.
		pub = serviceBase(eventstore.StreamTelemetry, eventstore.StreamAlerts, eventstore.StreamAgents)
		pub = append(pub, "telemetry.*.access.recorded", activityFilter, "siem.ocsf.*", "siem.dead.*", "alerts.*.*")
	case Lifecycle:
		// It reads ALERTS: each alert starts an incident run.
		pub = serviceBase(eventstore.StreamAgents, eventstore.StreamCredentials, eventstore.StreamLifecycle, eventstore.StreamAlerts)
		pub = append(pub, appendTo(eventstore.AggregateLifecycle)...)
	case Verifier:
		pub = []string{
			jsAPI + "STREAM.INFO." + eventstore.StreamRevocations,
			jsAPI + "CONSUMER.CREATE." + eventstore.StreamRevocations + ".>",
			jsAPI + "CONSUMER.INFO." + eventstore.StreamRevocations + ".*",
			jsAPI + "CONSUMER.MSG.NEXT." + eventstore.StreamRevocations + ".*",
		}
	default:
		return nil, fmt.Errorf("natsauth: unknown identity %q (want one of %v, or a tenant subscriber)", id, PlatformIdentities)
	}
	deny := othersDurables(id)
	switch id {
	case Admin:
		// The operator sees the bucket's stream among the others (its configuration and state:
		// the fault suite's invariants read every stream), and nothing of its content.
		deny = append(deny, slices.DeleteFunc(checkpointBucket(), func(s string) bool { return s == jsAPI+"STREAM.INFO."+checkpointStream })...)
	default:
		deny = append(deny, checkpointBucket()...)
		deny = append(deny, checkpointConfig...)
	case Registry:
		deny = append(deny, checkpointConfig...)
	}
	return permissions(user, dedupe(pub), nil, deny...), nil
}

// activityFilter is the subject of the agents' activity events, which the monitor publishes and the
// registry reads (services/registry/internal/registry.ActivityFilter).
const activityFilter = "telemetry.*.agent.active"

// checkpointStream is the stream of the registry's checkpoint bucket (eventstore.CheckpointBucket).
const checkpointStream = "OBJ_" + eventstore.CheckpointBucket

// checkpointConfig creates or changes the checkpoint bucket's stream: the admin's alone. Whoever may
// update it could add sources or subjects to it, and so read through the bucket streams it is denied.
var checkpointConfig = []string{jsAPI + "STREAM.CREATE." + checkpointStream, jsAPI + "STREAM.UPDATE." + checkpointStream}

// checkpointBucket is the use of the registry's checkpoint bucket: put, get, replace and delete
// objects (a replacement purges the old chunks), and nothing of another stream. Creating the bucket
// and changing its configuration is the admin's (Permissions).
func checkpointBucket() []string {
	return append(readStream(checkpointStream),
		jsAPI+"STREAM.PURGE."+checkpointStream,
		jsAPI+"CONSUMER.CREATE."+checkpointStream,
		jsAPI+"CONSUMER.DELETE."+checkpointStream+".*",
		"$JS.FC."+checkpointStream+".>",
		"$O."+eventstore.CheckpointBucket+".>",
	)
}

// SubscriberConsumer is the name of the only consumer a tenant's subscriber may create, read from
// and acknowledge on each stream: subscriber-<tenant>.
func SubscriberConsumer(tenant string) string { return SubscriberPrefix + tenant }

// SubscriberPermissions returns the read-only permissions of tenant's subscriber, the user with
// nkey public key user: on each aggregate stream the consumer SubscriberConsumer(tenant), filtered
// to agentid.<tenant>.> (the server checks the filter against the create request's subject), which
// it may pull from and acknowledge. It cannot publish an event, read another tenant's, use another
// consumer, or read a stream by direct get.
//
// Nor may it subscribe to the event subjects themselves: no identity may. A push consumer delivers
// only while a subscription names its deliver subject literally, and JetStream does not check that
// subject against its creator's permissions, so a subscription on an event subject would let a
// consumer of one stream deliver (and the stream capturing that subject store) messages on subjects
// its creator may not publish to.
func SubscriberPermissions(tenant, user string) (*server.Permissions, error) {
	if !tenantPattern.MatchString(tenant) {
		return nil, fmt.Errorf("natsauth: tenant %q: want a tenant id (a lowercase letter, then 1 to 62 lowercase letters, digits or dashes)", tenant)
	}
	if !publicKeyPattern.MatchString(user) {
		return nil, fmt.Errorf("natsauth: %q is not an nkey user public key", user)
	}
	cons := SubscriberConsumer(tenant)
	prefix := eventstore.SubjectRoot + "." + tenant + ".>"
	var pub []string
	for _, s := range aggregateStreams {
		pub = append(pub,
			jsAPI+"CONSUMER.CREATE."+s+"."+cons+"."+prefix,
			jsAPI+"CONSUMER.INFO."+s+"."+cons,
			jsAPI+"CONSUMER.DELETE."+s+"."+cons,
			jsAPI+"CONSUMER.MSG.NEXT."+s+"."+cons,
			"$JS.ACK."+s+"."+cons+".>",
		)
	}
	return permissions(user, pub, nil), nil
}

// permissions assembles a user's permissions: pub and sub allowed (sub besides its inbox), the
// forbidden subjects and deny denied.
func permissions(user string, pub, sub []string, deny ...string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: append(slices.Clone(forbidden), deny...)},
		Subscribe: &server.SubjectPermission{Allow: append([]string{InboxPrefix(user) + ".>"}, sub...), Deny: []string{"$SYS.>"}},
	}
}

// serviceBase is what every service publishes: the information of every stream (EnsureStreams at
// start reads them), reads of its streams and of REVOCATIONS (the token denylist of its API) and
// writes to the failed-event log.
func serviceBase(streams ...string) []string {
	var pub []string
	for _, s := range allStreams { // EnsureStreams checks every stream at start
		pub = append(pub, jsAPI+"STREAM.INFO."+s)
	}
	for _, s := range append(streams, eventstore.StreamRevocations) {
		pub = append(pub, readStream(s)...)
	}
	return append(pub, kvWrite(eventstore.FailedEventsBucket)...)
}

// readStream lets a client read stream s: its info, direct and leader gets, consumers it creates
// (ordered and durable) and their acknowledgements; Permissions denies the durables of
// DurableConsumers to all but their owners. It cannot delete a consumer.
func readStream(s string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + s,
		jsAPI + "STREAM.MSG.GET." + s,
		jsAPI + "DIRECT.GET." + s,
		jsAPI + "DIRECT.GET." + s + ".>",
		jsAPI + "CONSUMER.CREATE." + s + ".>",
		jsAPI + "CONSUMER.INFO." + s + ".*",
		jsAPI + "CONSUMER.MSG.NEXT." + s + ".*",
		"$JS.ACK." + s + ".>",
	}
}

// kvWrite lets a client put, update and delete keys of bucket (reads come with readStream).
func kvWrite(bucket string) []string {
	return append(readStream(kvStream(bucket)), "$KV."+bucket+".>")
}

// appendTo lets a client append events of the aggregate types, in every tenant.
func appendTo(aggTypes ...string) []string {
	out := make([]string, len(aggTypes))
	for i, t := range aggTypes {
		out[i] = eventstore.AggregateTypeSubject(t)
	}
	return out
}

func kvStream(bucket string) string { return "KV_" + bucket }

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
