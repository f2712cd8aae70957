// Package app wires the issuer: the per-tenant OAuth 2.0 authorization server (HTTP) and the
// IssuerService admin API (gRPC) over the CREDENTIALS event stream. cmd/issuer runs it alone;
// cmd/agentid runs it beside the other services.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/service"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"

	"github.com/agentid/agentid/services/issuer/internal/agents"
	"github.com/agentid/agentid/services/issuer/internal/approval"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
	"github.com/agentid/agentid/services/issuer/internal/replay"
	"github.com/agentid/agentid/services/issuer/internal/revocation"
	"github.com/agentid/agentid/services/issuer/internal/server"
	"github.com/agentid/agentid/services/issuer/internal/telemetry"
)

// Name is the component name.
const Name = "issuer"

// SigningKeyConsumer is the durable consumer (shared by replicas) that creates a signing key for
// every new tenant.
const SigningKeyConsumer = "issuer-signing-keys"

// tenantCreatedFilter matches tenant.created events on the TENANTS stream.
const tenantCreatedFilter = eventstore.SubjectRoot + ".*." + eventstore.AggregateTenant + ".*.created"

// Config configures the issuer.
type Config struct {
	// PublicURL is the issuer's public base URL, e.g. http://127.0.0.1:8080; the issuer of a tenant
	// is PublicURL + "/t/" + tenant. Required.
	PublicURL string
	// KEK is the 32-byte key-encryption key that seals signing keys at rest. Required.
	KEK []byte
	// KEKID names the key-encryption key in stored events; default "sha256:" + the first 16 hex
	// digits of the key's SHA-256.
	KEKID string
	// OldKEKs are earlier key-encryption keys: they open signing keys sealed with them (until
	// ResealSigningKeys has re-sealed those under KEK) and never seal.
	OldKEKs []OldKEK
	// SigningKeys configures signing-key rotation (publish delay, retention, schedule); Validate
	// refuses a publish delay or retention below its safe minimum (CheckSigningKeyRotation).
	SigningKeys credentials.SigningKeyRotation
	// UnsafeShortSigningKeyDurations accepts SigningKeys durations below their safe minimums, so that
	// tests rotate within seconds. Test-only, never a flag of the issuer binary: with it tokens can
	// outlive their key in the JWKS, or be signed by a key verifiers have not fetched yet.
	UnsafeShortSigningKeyDurations bool
	// SigningKeyClock is the clock of the credentials service (signing-key due times and transitions,
	// client record times); default time.Now. Tests move it to activate and remove keys on demand.
	SigningKeyClock func() time.Time
	// SigningKeyCheckInterval is how often a replica applies the signing-key transitions that are
	// due; default 10 seconds.
	SigningKeyCheckInterval time.Duration
	// DefaultTokenTTL is the access token lifetime of clients that set none; default 10 minutes, at
	// most 24 hours.
	DefaultTokenTTL time.Duration
	// JTIReplicas is the replica count of the assertion-id log (and bucket); default 1 (3 in clusters).
	JTIReplicas int
	// JTIStore is where used assertion and DPoP proof ids are recorded: JTIStoreLog (the default) or
	// JTIStoreBucketAndLog while replicas of a release that used the bucket alone still run
	// (docs/deploy.md, "Upgrading the issuer's replay store").
	JTIStore string
	// TelemetryBuffer bounds the token telemetry waiting to be published; default 8192.
	TelemetryBuffer int
	// DPoPNonceOptional, when true, accepts DPoP proofs without a server nonce at the token endpoint.
	// By default the issuer requires one (RFC 9449 §8), derived from the KEK so every replica accepts it.
	DPoPNonceOptional bool
	// TemporalNamespace is the Temporal namespace in the permissions of tokens for the Temporal
	// frontend (audience urn:agentid:temporal); default oauth.DefaultTemporalNamespace.
	TemporalNamespace string
	// ProjectionLagAllowance is how long after a client.disabled or agent event the revocation the
	// issuer derives from it still covers newly issued tokens: a token that a replica whose projection
	// had not applied the event yet issued just after it is revoked too. Default 5 seconds, at most
	// 1 minute.
	ProjectionLagAllowance time.Duration
	// RateLimits bound the token, introspection and revocation requests per source address and per
	// client id, and the denials stored as telemetry; the zero value limits nothing.
	RateLimits RateLimits
	// PlatformClients are the platform's own service identities (bootstrap admin, lifecycle worker)
	// registered in the system tenant at start, idempotently. A split deployment bootstraps this way;
	// `agentid dev` registers its identities itself.
	PlatformClients []PlatformClient
}

// The stores of used assertion ids (Config.JTIStore).
const (
	// JTIStoreLog records ids in the replay log (replay.Log): one append per batch of requests.
	JTIStoreLog = "log"
	// JTIStoreBucketAndLog records each id in the key-value bucket of earlier releases (replay.Cache)
	// and then in the log, for rolling upgrades from those releases.
	JTIStoreBucketAndLog = "bucket+log"
)

// replayStore records used ids (replay.Log or replay.Chain).
type replayStore interface {
	Ensure(ctx context.Context) error
	Use(ctx context.Context, tenant, clientID, jti string) error
	UseUntil(ctx context.Context, tenant, clientID, jti string, until time.Time) error
}

// OldKEK is an earlier key-encryption key and its id (the kek_id of the events it sealed).
type OldKEK struct {
	// ID is the key's id; default DefaultKEKID(Key).
	ID string
	// Key is the 32-byte key.
	Key []byte
}

// PlatformClient is a service identity of the system tenant: its client id, its public keys and the
// platform roles its tokens carry.
type PlatformClient struct {
	// ClientID is the OAuth client id.
	ClientID string
	// PublicJWKS is the JWK Set (public keys only) the client authenticates with.
	PublicJWKS string
	// Roles are the platform roles put into its tokens, e.g. platform-admin.
	Roles []string
}

// Validate checks the configuration.
func (c Config) Validate() error {
	u, err := url.Parse(c.PublicURL)
	switch {
	case c.PublicURL == "":
		return errors.New("issuer: PublicURL is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("issuer: PublicURL %q must be an absolute http(s) URL", c.PublicURL)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("issuer: PublicURL %q must not have a query or fragment", c.PublicURL)
	case len(c.KEK) != keys.KEKSize:
		return fmt.Errorf("issuer: KEK must be %d bytes, got %d", keys.KEKSize, len(c.KEK))
	case strings.ContainsAny(c.KEKID, "\r\n"):
		return errors.New("issuer: KEKID must not contain line breaks")
	case c.DefaultTokenTTL < 0 || c.DefaultTokenTTL > credentials.MaxTokenTTL:
		return fmt.Errorf("issuer: DefaultTokenTTL must be between 0 (default) and %s", credentials.MaxTokenTTL)
	case c.DefaultTokenTTL != 0 && c.DefaultTokenTTL < time.Second:
		return errors.New("issuer: DefaultTokenTTL must be at least 1s")
	case c.JTIReplicas < 0 || c.TelemetryBuffer < 0:
		return errors.New("issuer: JTIReplicas and TelemetryBuffer must not be negative")
	case c.JTIStore != "" && c.JTIStore != JTIStoreLog && c.JTIStore != JTIStoreBucketAndLog:
		return fmt.Errorf("issuer: JTIStore %q: want %s or %s", c.JTIStore, JTIStoreLog, JTIStoreBucketAndLog)
	case c.SigningKeyCheckInterval < 0:
		return errors.New("issuer: SigningKeyCheckInterval must not be negative")
	}
	for i, k := range c.OldKEKs {
		if strings.ContainsAny(k.ID, "\r\n") || len(k.Key) != keys.KEKSize {
			return fmt.Errorf("issuer: OldKEKs[%d] needs a %d-byte key and an id without line breaks", i, keys.KEKSize)
		}
	}
	if err := revocation.CheckProjectionLagAllowance(c.ProjectionLagAllowance); err != nil {
		return fmt.Errorf("issuer: ProjectionLagAllowance: %w", err)
	}
	if err := CheckSigningKeyRotation(c.SigningKeys, c.ProjectionLagAllowance, c.UnsafeShortSigningKeyDurations); err != nil {
		return fmt.Errorf("issuer: SigningKeys: %w", err)
	}
	for i, pc := range c.PlatformClients {
		if pc.ClientID == "" || pc.PublicJWKS == "" || len(pc.Roles) == 0 {
			return fmt.Errorf("issuer: PlatformClients[%d] needs a client id, public keys and at least one role", i)
		}
	}
	return nil
}

// Deps are the issuer's dependencies.
type Deps struct {
	// Store is the event store. Required.
	Store *eventstore.Store
	// JetStream holds the assertion-id bucket; default Store.JetStream().
	JetStream jetstream.JetStream
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the issuer's metrics; default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Denylist, if set, is the process's denylist, kept current by a feed its owner runs (pkg/service
	// Revocations, Env.Denylist): introspection and VerifyAPIToken check it, so that a process holds
	// one copy of the revocations. Without it the issuer runs a feed of its own (and exports its
	// agentid_revocations_* metrics on Registerer).
	Denylist *authn.Denylist
	// DenylistReady blocks until Denylist has caught up with the REVOCATIONS stream (Env.DenylistReady);
	// required with Denylist. The OAuth endpoints answer 503 until it returns nil.
	DenylistReady func(context.Context) error
}

// App is the issuer component.
type App struct {
	cfg    Config
	store  *eventstore.Store
	logger *slog.Logger

	state     *credentials.State
	runner    *eventstore.Runner
	agents    *agents.State      // agent states, for the token endpoint
	agentsRun *eventstore.Runner // the agents projection's runner
	reactor   *revocation.Reactor
	svc       *credentials.Service
	replay    replayStore
	jtiLog    *replay.Log
	telemetry *telemetry.Emitter
	oauth     *oauth.Server
	http      http.Handler
	grpc      *server.Server
	denylist  *authn.Denylist             // checked by introspection and VerifyAPIToken
	denyReady func(context.Context) error // returns once denylist has caught up
	revFeed   *authn.RevocationFeed       // the issuer's own feed of denylist; nil when it is shared

	running   atomic.Bool   // the projection runner is running
	streams   chan struct{} // closed once the streams exist
	streamsOK sync.Once
	httpReady atomic.Bool // the projection has caught up
	readyOnce sync.Once
	ready     chan struct{} // closed when the projection has caught up and the system key exists
}

var _ service.HTTPComponent = (*App)(nil)

// New builds the issuer; it does no I/O (Tasks do).
func New(cfg Config, deps Deps) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("issuer: Deps.Store is required")
	}
	if (deps.Denylist == nil) != (deps.DenylistReady == nil) {
		return nil, errors.New("issuer: Deps.Denylist and Deps.DenylistReady go together: set both or neither")
	}
	if deps.JetStream == nil {
		deps.JetStream = deps.Store.JetStream()
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.DefaultRegisterer
	}
	if cfg.KEKID == "" {
		cfg.KEKID = DefaultKEKID(cfg.KEK)
	}
	if cfg.DefaultTokenTTL == 0 {
		cfg.DefaultTokenTTL = credentials.DefaultTokenTTL
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	logger := deps.Logger.With("component", Name)

	if cfg.SigningKeyCheckInterval == 0 {
		cfg.SigningKeyCheckInterval = DefaultSigningKeyCheckInterval
	}
	sealer, oldSealers, err := sealers(cfg)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, store: deps.Store, logger: logger, ready: make(chan struct{}), streams: make(chan struct{})}
	a.state = credentials.NewState(logger, append([]*keys.Sealer{sealer}, oldSealers...)...)
	a.runner = deps.Store.NewRunner(a.state, eventstore.StreamCredentials, nil)
	a.agents = agents.NewState()
	a.agentsRun = deps.Store.NewRunner(a.agents, eventstore.StreamAgents, nil)
	agentGate, err := agents.NewGate(agents.GateConfig{State: a.agents, LastSequence: a.agentsLastSeq, WaitFor: a.agentsRun.WaitFor})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.reactor, err = revocation.NewReactor(revocation.ReactorConfig{
		Consumer: deps.Store, Revoker: &revocation.Writer{Store: deps.Store},
		ProjectionLagAllowance: cfg.ProjectionLagAllowance, Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.svc, err = credentials.NewService(credentials.ServiceConfig{
		Store:           deps.Store,
		State:           a.state,
		Sealer:          sealer,
		OldSealers:      oldSealers,
		Rotation:        cfg.SigningKeys,
		DefaultTokenTTL: cfg.DefaultTokenTTL,
		WaitApplied:     a.waitApplied,
		Now:             cfg.SigningKeyClock,
		Logger:          logger,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.jtiLog = replay.NewLog(deps.JetStream, replay.LogConfig{Config: replay.Config{Replicas: cfg.JTIReplicas}, Logger: logger, Registerer: deps.Registerer})
	a.replay = a.jtiLog
	if cfg.JTIStore == JTIStoreBucketAndLog {
		a.replay = replay.Chain{Bucket: replay.New(deps.JetStream, replay.Config{Replicas: cfg.JTIReplicas}), Log: a.jtiLog}
	}
	a.telemetry, err = telemetry.New(telemetry.Config{
		Publisher: deps.Store, Buffer: cfg.TelemetryBuffer, Registerer: deps.Registerer, Logger: logger,
		DenialsPerSecond: cfg.RateLimits.DenialsPerSecond,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if err := a.setDenylist(deps, logger); err != nil {
		return nil, err
	}
	nonceKey, err := DPoPNonceKey(cfg.KEK)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	perIP, perClient, attempts, err := cfg.RateLimits.limiters()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.oauth, err = oauth.New(oauth.Config{
		PublicURL:         cfg.PublicURL,
		Credentials:       a.state,
		Replay:            a.replay,
		Agents:            agentGate,
		Telemetry:         a.telemetry,
		Revocations:       &revocation.Writer{Store: deps.Store},
		DPoP:              oauth.DPoPConfig{NonceKey: nonceKey, NonceOptional: cfg.DPoPNonceOptional},
		TemporalNamespace: cfg.TemporalNamespace,
		Denylist:          a.denylist,
		Logger:            logger,
		// Nil (no limit) allows everything. Attempts are charged before the assertion's signature
		// (by client and source address), the client's own budget after it.
		ClientLimiter:  perClient,
		AttemptLimiter: attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.http = server.NewHTTPHandler(server.HTTPConfig{OAuth: a.oauth, Ready: a.httpReady.Load, Logger: logger,
		PerIP: perIP, Registerer: deps.Registerer})
	revoker, err := revocation.NewService(revocation.ServiceConfig{
		Writer: &revocation.Writer{Store: deps.Store}, Tokens: a.oauth, Clients: a.state, Logger: logger,
		ProjectionLagAllowance: cfg.ProjectionLagAllowance,
	})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	minter, err := approval.New(approval.Config{Keys: a.state, Issuer: a.oauth.Issuer})
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	a.grpc = server.NewServer(a.svc, revoker).WithApprovals(minter).WithClientChecker(a.oauth)
	return a, nil
}

// Name is "issuer".
func (a *App) Name() string { return Name }

// RegisterGRPC registers IssuerService.
func (a *App) RegisterGRPC(s *grpc.Server) { issuerv1.RegisterIssuerServiceServer(s, a.grpc) }

// HTTPHandler serves the OAuth/OIDC endpoints under /t/{tenant}/ (and the RFC 8414 well-known form).
func (a *App) HTTPHandler() http.Handler { return a.http }

// setDenylist uses the process's denylist from deps, or builds the issuer's own feed with its metrics.
func (a *App) setDenylist(deps Deps, logger *slog.Logger) error {
	if deps.Denylist != nil {
		a.denylist, a.denyReady = deps.Denylist, deps.DenylistReady
		return nil
	}
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{
		JetStream: deps.JetStream, Denylist: authn.NewDenylist(authn.DenylistConfig{}), Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	for _, c := range service.RevocationMetrics(func() *authn.RevocationFeed { return feed }) {
		if err := deps.Registerer.Register(c); err != nil {
			// Another feed's metrics hold the names: this one is only not exported.
			logger.Warn("revocation feed metric not registered", "error", err)
		}
	}
	a.revFeed, a.denylist, a.denyReady = feed, feed.Denylist(), feed.Ready
	return nil
}

// Tasks are the credentials and agents projections, the bootstrap of the system tenant's key
// followed by the tenant consumer that gives each new tenant a signing key, the telemetry publisher,
// the revocation reactor, and the issuer's own revocation feed unless its denylist is shared.
func (a *App) Tasks() []service.Task {
	tasks := []service.Task{a.runProjection, a.runAgentsProjection, a.runTenantKeys, a.telemetry.Run, a.registerPlatformClients, a.runReactor, a.runSigningKeyRotation, a.jtiLog.Run}
	if a.revFeed != nil {
		tasks = append(tasks, a.runRevocationFeed)
	}
	return tasks
}

// registerPlatformClients registers the configured platform identities once the issuer is ready. A
// failure ends the process: a platform without its own identities cannot be operated.
func (a *App) registerPlatformClients(ctx context.Context) error {
	if len(a.cfg.PlatformClients) == 0 {
		return nil
	}
	if err := a.Ready(ctx); err != nil {
		return nil // shutting down
	}
	for _, pc := range a.cfg.PlatformClients {
		for delay := platformClientRetryMin; ; delay = min(2*delay, platformClientRetryMax) {
			err := a.EnsureClient(ctx, authn.SystemTenant, &issuerv1.Client{
				ClientId: pc.ClientID, PublicJwks: pc.PublicJWKS, Roles: pc.Roles,
			})
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return nil // shutting down
			case errs.Is(err, errs.KindUnavailable):
				a.logger.WarnContext(ctx, "platform client not registered yet; retrying", "client_id", pc.ClientID, "retry_in", delay.String(), "error", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(delay):
				}
				continue
			default:
				return fmt.Errorf("issuer: register platform client %s: %w", pc.ClientID, err)
			}
			break
		}
		a.logger.InfoContext(ctx, "platform client registered", "client_id", pc.ClientID, "roles", pc.Roles)
	}
	return nil
}

// Retry delays of registerPlatformClients while the event store is unavailable.
const (
	platformClientRetryMin = 200 * time.Millisecond
	platformClientRetryMax = 10 * time.Second
)

// Issuer returns the issuer identifier of tenant.
func (a *App) Issuer(tenant string) string { return a.oauth.Issuer(tenant) }

// Ready blocks until the credentials and agents projections have caught up and the system tenant has
// a signing key, or ctx is done.
func (a *App) Ready(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("issuer not ready: %w", ctx.Err())
	}
}

// TelemetryDropped is how many token telemetry events were dropped because the buffer was full.
func (a *App) TelemetryDropped() uint64 { return a.telemetry.Dropped() }

// EnsureSigningKey makes sure tenant has a signing key (idempotent; replicas create one key).
func (a *App) EnsureSigningKey(ctx context.Context, tenant string) error {
	return a.svc.EnsureSigningKey(ctx, tenant)
}

// EnsureClient registers c in tenant unless it is already registered the same way (idempotent), for
// bootstrapping platform identities. It fails with AlreadyExists if the client exists with other
// keys, scopes, roles or settings, and FailedPrecondition if it is disabled. The streams must exist
// (eventstore.Store.EnsureStreams, which the projection task also runs).
func (a *App) EnsureClient(ctx context.Context, tenant string, c *issuerv1.Client) error {
	return a.svc.EnsureClient(ctx, tenant, c)
}

// DisableClient disables clientID of tenant and revokes its tokens (idempotent), as the platform's
// own service identity, for bootstrapping: agentid dev retires a lifecycle worker client an older
// version registered as platform-admin.
func (a *App) DisableClient(ctx context.Context, tenant, clientID, reason string) error {
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: credentials.ServiceActor, Kind: eventstore.ActorService}}
	_, err := a.svc.DisableClient(ctx, md, tenant, clientID, reason, "", true)
	return err
}

// waitApplied gives commands read-your-writes while the projection runs; without a running
// projection there is nothing to wait for.
func (a *App) waitApplied(ctx context.Context, seq uint64) {
	if !a.running.Load() {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.runner.WaitFor(wctx, seq); err != nil {
		a.logger.WarnContext(ctx, "credentials projection is behind", "seq", seq, "error", err)
	}
}

func (a *App) runProjection(ctx context.Context) error {
	if err := a.store.EnsureStreams(ctx); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	a.streamsOK.Do(func() { close(a.streams) })
	a.running.Store(true)
	defer a.running.Store(false)
	return a.runner.Run(ctx)
}

// runAgentsProjection runs the agents projection once the streams exist.
func (a *App) runAgentsProjection(ctx context.Context) error {
	select {
	case <-a.streams:
	case <-ctx.Done():
		return nil
	}
	return a.agentsRun.Run(ctx)
}

// agentsLastSeq is the AGENTS stream's last sequence as the server knows it now.
func (a *App) agentsLastSeq(ctx context.Context) (uint64, error) {
	st, err := a.store.JetStream().Stream(ctx, eventstore.StreamAgents)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().State.LastSeq, nil
}

// runRevocationFeed keeps the denylist current once the streams exist.
func (a *App) runRevocationFeed(ctx context.Context) error {
	select {
	case <-a.streams:
	case <-ctx.Done():
		return nil
	}
	return a.revFeed.Run(ctx)
}

// runReactor runs the revocation reactor once the issuer is ready.
func (a *App) runReactor(ctx context.Context) error {
	if err := a.Ready(ctx); err != nil {
		return nil // shutting down
	}
	if err := a.reactor.Run(ctx); err != nil {
		return fmt.Errorf("issuer: revocation reactor: %w", err)
	}
	return nil
}

func (a *App) runTenantKeys(ctx context.Context) error {
	for _, r := range []*eventstore.Runner{a.runner, a.agentsRun} {
		if err := r.Ready(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("issuer: %w", err)
		}
	}
	// Fail closed: a signing key in use that this issuer cannot open (its KEK was not given) would
	// leave its tenant without tokens or verification.
	if err := a.state.CheckSigningKeys(); err != nil {
		return fmt.Errorf("issuer: cannot start: %w", err)
	}
	// Introspection and the platform-token check refuse revoked tokens only once the denylist holds
	// every revocation that can still matter.
	if err := a.denyReady(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // shutting down
		}
		return fmt.Errorf("issuer: revocations: %w", err)
	}
	a.httpReady.Store(true)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := a.replay.Ensure(ctx)
		if err == nil {
			err = a.svc.EnsureSigningKey(ctx, authn.SystemTenant)
		}
		if err == nil {
			break
		}
		a.logger.WarnContext(ctx, "cannot bootstrap the system tenant yet; retrying", "retry_in", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	// A replica answers token requests once it has read the replay log of used ids up to its end.
	if err := a.jtiLog.Ready(ctx); err != nil {
		return nil // shutting down
	}
	a.warnRecentReplayBucket(ctx)
	a.readyOnce.Do(func() { close(a.ready) })
	a.logger.InfoContext(ctx, "issuer ready", "issuer_base", a.cfg.PublicURL)
	return a.store.Consume(ctx, SigningKeyConsumer, eventstore.StreamTenants, []string{tenantCreatedFilter}, a.onTenantCreated)
}

// warnRecentReplayBucket warns when this replica records ids in the log alone while the replay bucket
// of earlier releases was written within its lifetime: replicas of such a release may still run, and
// they do not read the log (docs/deploy.md, "Upgrading the issuer's replay store").
func (a *App) warnRecentReplayBucket(ctx context.Context) {
	if a.cfg.JTIStore == JTIStoreBucketAndLog {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := a.store.JetStream().Stream(ictx, "KV_"+replay.Bucket)
	if err != nil {
		return // no bucket: nothing to upgrade from
	}
	last := st.CachedInfo().State.LastTime
	if age := time.Since(last); st.CachedInfo().State.Msgs > 0 && age < replay.DefaultTTL {
		a.logger.WarnContext(ctx, "the replay bucket of earlier releases was written recently: if issuer replicas of such a release still run, run every replica with --jti-store bucket+log until 10 minutes after the last of them stopped (docs/deploy.md)",
			"bucket", replay.Bucket, "last_write", last.UTC().Format(time.RFC3339), "jti_store", a.cfg.JTIStore)
	}
}

func (a *App) onTenantCreated(ctx context.Context, e eventstore.Event) error {
	if e.Type != "tenant.created" {
		return nil
	}
	tenant := e.AggregateID
	if m, err := eventstore.DecodeAs[*registryv1.TenantCreated](e); err == nil && m.GetTenant().GetTenantId() != "" {
		tenant = m.GetTenant().GetTenantId()
	}
	if !authn.ValidTenant(tenant) {
		a.logger.WarnContext(ctx, "tenant.created event with an invalid tenant id; no signing key", "tenant", tenant, "event_id", e.ID)
		return nil
	}
	return a.svc.EnsureSigningKey(ctx, tenant)
}
