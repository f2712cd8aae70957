package dev

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/fsutil"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/pkg/tlsx"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	issuerapp "github.com/agentid/agentid/services/issuer/app"
	lifecycleapp "github.com/agentid/agentid/services/lifecycle/app"
	monitorapp "github.com/agentid/agentid/services/monitor/app"
	policyapp "github.com/agentid/agentid/services/policy/app"
	registryapp "github.com/agentid/agentid/services/registry/app"
)

// Config is what `agentid dev` runs with.
type Config struct {
	DataDir   string
	GRPCAddr  string
	HTTPAddr  string
	PublicURL string
	NATSURL   string
	NATSPort  int
	// NATSNkey is the nkey seed file every component connects with to an external NATS (NATSURL);
	// the embedded server uses the identities generated in the data dir instead.
	NATSNkey string
	// NATSCA is the CA bundle that an external NATS server's TLS certificate is verified against.
	NATSCA string
	// NATSSync is the embedded server's fsync policy: NATSSyncAlways (default) or NATSSyncInterval.
	NATSSync string
	// NATSGrace is how long NATS may be unreachable before readiness drops.
	NATSGrace time.Duration
	// AgentResources are the RFC 8707 resources registered for every agent's client (default
	// DefaultAgentResource): agents' tokens are for these, never for the platform API.
	AgentResources  []string
	TemporalAddress string
	TemporalPort    int
	TemporalUIPort  int
	// ReconcileInterval is the lifecycle reconciler's period (default 30s).
	ReconcileInterval time.Duration
	// EventRetryBackoff overrides the lifecycle's redelivery delays of agent events (tests of long
	// engine outages use short ones).
	EventRetryBackoff []time.Duration
	// WorkflowStartTimeout bounds one attempt of the lifecycle to start a run (default 10s).
	WorkflowStartTimeout time.Duration
	DuckDBPath           string
	// DuckDBMemoryLimit bounds the telemetry DuckDB's buffer pool in bytes (0: its default).
	DuckDBMemoryLimit int64
	// ClickHouseDSN, if set, makes the monitor store telemetry in ClickHouse instead of DuckDB.
	ClickHouseDSN string
	// ClickHouseLocal runs Debian's clickhouse-server as a child process (data in
	// <data-dir>/clickhouse) and stores telemetry there.
	ClickHouseLocal bool
	// SIEMWebhookURL and SIEMWebhookSecretFile, when set, make the monitor's SIEM export also POST
	// signed OCSF events to a webhook (docs/siem.md); the export publishes on siem.ocsf.<tenant> anyway.
	SIEMWebhookURL, SIEMWebhookSecretFile string
	// Incidents are the lifecycle's incident response settings (webhook, escalation, policy overrides).
	Incidents lifecycleapp.IncidentFlags
	// Sweeps are the lifecycle's sweep and deprovisioning sign-off settings.
	Sweeps lifecycleapp.SweepFlags
	// Approvals are the reminders and escalation of provisioning approvals.
	Approvals lifecycleapp.ApprovalFlags
	// Reviews are the lifecycle's access review settings (schedule, usage and answer days).
	Reviews lifecycleapp.ReviewFlags
	// Rotation are the agent credential rotation settings (overlap, due days, reminders).
	Rotation     lifecycleapp.RotationFlags
	BundleDir    string
	LogLevel     slog.Level
	LogFile      string
	OTLPEndpoint string
	// GoMemoryLimit is the Go runtime's soft memory limit while Run serves, in bytes: 0 leaves the
	// runtime's own ($GOMEMLIMIT, or none), anything else is at least MinGoMemoryLimit. The command
	// leaves it to $GOMEMLIMIT when that is set and the flag is not given.
	GoMemoryLimit int64
	// goMemoryLimitSource says where GoMemoryLimit comes from, for the log.
	goMemoryLimitSource string
	// PprofAddr, when set, serves net/http/pprof there (loopback only unless PprofAllowRemote).
	PprofAddr string
	// PprofAllowRemote permits a PprofAddr that is not loopback.
	PprofAllowRemote bool
	// ProjectionLagAllowance is the issuer's projection-lag allowance (above 0, at most 1m; default 5s).
	ProjectionLagAllowance time.Duration
	// DPoPNonceOptional lets the issuer accept DPoP proofs without a server nonce.
	DPoPNonceOptional bool
	// RateLimits are the issuer's abuse limits; the zero value (the default here) limits nothing.
	RateLimits issuerapp.RateLimits
	// SigningKeys are the issuer's KEK id, old KEKs and signing-key rotation settings.
	SigningKeys SigningKeyFlags
	// TLSCertFile and TLSKeyFile, when set, make the gRPC and HTTP addresses serve TLS (reloaded on
	// change); without them both must be loopback addresses.
	TLSCertFile, TLSKeyFile string
	// CAFile is what the process's own clients (token verifier, lifecycle worker) verify its
	// certificate against; default the certificates in TLSCertFile.
	CAFile         string
	Stdout, Stderr io.Writer
}

// DefaultConfig returns the documented defaults (docs/architecture.md, "Ports").
func DefaultConfig() Config {
	return Config{
		DataDir:                ".agentid",
		GRPCAddr:               "127.0.0.1:7070",
		HTTPAddr:               "127.0.0.1:8080",
		NATSPort:               4222,
		NATSSync:               NATSSyncAlways,
		NATSGrace:              service.DefaultNATSGrace,
		TemporalPort:           7233,
		TemporalUIPort:         8233,
		ReconcileInterval:      lifecycleapp.DefaultReconcileInterval,
		ProjectionLagAllowance: issuerapp.DefaultProjectionLagAllowance,
		AgentResources:         []string{DefaultAgentResource},
		SigningKeys:            DefaultSigningKeyFlags(),
		GoMemoryLimit:          DefaultGoMemoryLimit,
		Stdout:                 os.Stdout,
		Stderr:                 os.Stderr,
	}
}

const (
	// DefaultAgentResource is the resource agents' tokens are for in `agentid dev`: the example
	// resource server's URL (examples/resourceserver --audience https://files.example).
	DefaultAgentResource = "https://files.example"
	// DefaultTenant is the tenant `agentid dev` creates on first start.
	DefaultTenant = "default"
	// BootstrapAdminClientID is the platform-admin service identity whose credential dev writes.
	BootstrapAdminClientID = "bootstrap-admin"
	// LifecycleClientID is the service identity the lifecycle worker calls the other services with.
	LifecycleClientID = "lifecycle-worker"
	// RegistryClientID is the service identity the registry asks the policy service to admit with.
	RegistryClientID = "registry-service"
	kekFile          = "kek.key"
	// NATSSyncAlways makes the embedded NATS server fsync every write before acknowledging it.
	NATSSyncAlways = "always"
	// NATSSyncInterval keeps nats-server's default: fsync every two minutes, acknowledging before.
	NATSSyncInterval = "interval"
	// NATSCredentialsDir holds, under the data dir, the nkey seeds of the embedded NATS server's
	// users (natsauth.SeedPath): one per platform identity and the default tenant's subscriber.
	NATSCredentialsDir = "credentials/nats"
)

// Run starts everything, prints where it is, and serves until ctx is done.
func Run(ctx context.Context, cfg Config) (err error) {
	started := time.Now()
	if err := failpoint.FromEnv(); err != nil {
		return err
	}
	if cfg.NATSSync != NATSSyncAlways && cfg.NATSSync != NATSSyncInterval {
		return fmt.Errorf("--nats-sync %q: want %s or %s", cfg.NATSSync, NATSSyncAlways, NATSSyncInterval)
	}
	if cfg.NATSGrace <= 0 {
		return fmt.Errorf("--nats-grace %s: want a positive duration", cfg.NATSGrace)
	}
	if cfg.NATSURL == "" && (cfg.NATSNkey != "" || cfg.NATSCA != "") {
		return errors.New("--nats-nkey and --nats-ca are for an external --nats-url; the embedded NATS server uses the identities in <data-dir>/" + NATSCredentialsDir)
	}
	if err := service.CheckPprofAddr(cfg.PprofAddr, cfg.PprofAllowRemote); err != nil {
		return err
	}
	if err := checkGoMemoryLimit(cfg.GoMemoryLimit); err != nil {
		return err
	}
	if err := issuerapp.CheckProjectionLagAllowanceFlag(cfg.ProjectionLagAllowance); err != nil {
		return fmt.Errorf("--%s: %w", issuerapp.ProjectionLagAllowanceFlag, err)
	}
	if err := checkListenTLS(cfg); err != nil {
		return err
	}
	signingKeys, err := cfg.SigningKeys.load(cfg.ProjectionLagAllowance)
	if err != nil {
		return err
	}
	var incidents lifecycleapp.Config
	if err := cfg.Incidents.Apply(&incidents); err != nil {
		return err
	}
	if err := cfg.Sweeps.Apply(&incidents); err != nil {
		return err
	}
	if err := cfg.Reviews.Apply(&incidents); err != nil {
		return err
	}
	if err := cfg.Rotation.Apply(&incidents); err != nil {
		return err
	}
	if err := cfg.Approvals.Apply(&incidents); err != nil {
		return err
	}
	// Checked before anything is created; loaded again below with the process's logger.
	if _, _, err := loadDevTLS(cfg, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = "http://" + cfg.HTTPAddr
		if cfg.TLSCertFile != "" {
			cfg.PublicURL = "https://" + cfg.HTTPAddr
		}
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if err := authn.CheckIssuerURL(cfg.PublicURL); err != nil {
		return fmt.Errorf("--public-url: %w", err)
	}
	if l := cfg.DuckDBMemoryLimit; l != 0 {
		if cfg.ClickHouseLocal || cfg.ClickHouseDSN != "" {
			return errors.New("--duckdb-memory-limit bounds the DuckDB telemetry store: drop it with ClickHouse")
		}
		if l < monitorapp.MinDuckDBMemoryLimit {
			return fmt.Errorf("--duckdb-memory-limit %d is below the minimum of %d bytes (%d MiB)", l, monitorapp.MinDuckDBMemoryLimit, monitorapp.MinDuckDBMemoryLimit>>20)
		}
	}
	if err := fsutil.MkdirAll(filepath.Join(cfg.DataDir, "logs"), 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if cfg.ClickHouseLocal && cfg.ClickHouseDSN != "" {
		return errors.New("--clickhouse runs a local server: drop --clickhouse-dsn (or $" + ClickHouseDSNEnv + ")")
	}
	if cfg.DuckDBPath == "" && cfg.ClickHouseDSN == "" && !cfg.ClickHouseLocal {
		cfg.DuckDBPath = filepath.Join(cfg.DataDir, "telemetry.duckdb")
	}
	logOut, closeLog, err := openLog(cfg)
	if err != nil {
		return err
	}
	defer closeLog()
	log := grpcx.NewLogger(logOut, cfg.LogLevel)
	defer applyGoMemoryLimit(cfg.GoMemoryLimit, cfg.goMemoryLimitSource, log)()
	tlsConfigs, selfTLS, err := loadDevTLS(cfg, log)
	if err != nil {
		return err
	}
	if armed := failpoint.Armed(); len(armed) > 0 {
		log.Warn("FAILPOINTS ARMED: this process will fail on purpose (unset "+failpoint.Env+" outside tests)", "failpoints", armed)
		fmt.Fprintf(cfg.Stderr, "agentid: failpoints armed (%s): this process will fail on purpose\n", strings.Join(armed, ", "))
	}

	shutdownTracing, err := observability.Setup(ctx, observability.TracingConfig{
		ServiceName: "agentid-dev", OTLPEndpoint: cfg.OTLPEndpoint, Insecure: true,
	})
	if err != nil {
		return err
	}
	defer func() { _ = shutdownTracing(context.Background()) }()

	kek, err := loadOrCreateKEK(filepath.Join(cfg.DataDir, kekFile))
	if err != nil {
		return err
	}

	// NATS JetStream: embedded with file storage in the data dir unless an external URL is given.
	// The embedded server accepts only the platform's identities, whose seeds are generated in the
	// data dir on first start; each component connects as its own identity (pkg/natsauth).
	natsURL, natsNote, natsCreds := cfg.NATSURL, "", ""
	if natsURL == "" {
		natsCreds = filepath.Join(cfg.DataDir, NATSCredentialsDir)
		users, err := natsauth.LoadOrCreateUsers(natsCreds, DefaultTenant)
		if err != nil {
			return fmt.Errorf("NATS credentials: %w", err)
		}
		syncAlways := cfg.NATSSync == NATSSyncAlways
		ns, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{
			Host: "127.0.0.1", Port: cfg.NATSPort, StoreDir: filepath.Join(cfg.DataDir, "nats"),
			ServerName: "agentid-dev", Logger: log.With("component", "nats"), SyncAlways: syncAlways,
			NkeyUsers: natsauth.NkeyUsers(users),
		})
		if err != nil {
			return fmt.Errorf("embedded NATS: %w", err)
		}
		if syncAlways {
			natsNote = "fsync before every acknowledgement"
			log.Info("embedded NATS: sync always: every event is fsynced before it is acknowledged", "nats_sync", cfg.NATSSync)
		} else {
			natsNote = "fsync every 2 minutes: a power loss can drop acknowledged events"
			log.Warn("embedded NATS: sync interval (nats-server default, every 2 minutes): events are acknowledged before they are fsynced, and a power loss or kernel crash can lose acknowledged events", "nats_sync", cfg.NATSSync)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		natsURL = ns.ClientURL()
	}
	// connect opens a connection as identity id (embedded server) or with --nats-nkey (external).
	connect := func(id natsauth.Identity) (*nats.Conn, jetstream.JetStream, error) {
		seed := cfg.NATSNkey
		if natsCreds != "" {
			seed = natsauth.SeedPath(natsCreds, string(id))
		}
		opts, err := natsauth.ClientOptions(seed, cfg.NATSCA)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, natsauth.LogOptions(log.With("nats_identity", string(id)))...)
		nc, err := nats.Connect(natsURL, append(opts, nats.Name("agentid dev "+string(id)), nats.MaxReconnects(-1))...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to NATS at %s as %s: %w", natsURL, id, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return nc, js, nil
	}
	nc, js, err := connect(natsauth.Admin)
	if err != nil {
		return err
	}
	defer nc.Close()
	// With an external server (one --nats-nkey for all) the components share the connection, whose
	// state readiness follows.
	componentJS := map[natsauth.Identity]jetstream.JetStream{}
	for _, id := range natsauth.ServiceIdentities {
		if natsCreds == "" {
			componentJS[id] = js
			continue
		}
		cnc, cjs, err := connect(id)
		if err != nil {
			return err
		}
		defer cnc.Close()
		componentJS[id] = cjs
	}
	storeFor := func(svc string) *eventstore.Store {
		sjs, ok := componentJS[natsauth.Identity(svc)]
		if !ok {
			sjs = js // the admin identity: stream setup
		}
		return eventstore.New(sjs, eventstore.WithSource("agentid/"+svc), eventstore.WithLogger(log.With("service", svc)))
	}
	// The admin identity sets up the streams and the registry's checkpoint bucket.
	setup := eventstore.New(js, eventstore.WithSource("agentid/dev"), eventstore.WithLogger(log.With("service", "dev")), eventstore.WithCheckpointBucket(0))
	if err := setup.EnsureStreams(ctx); err != nil {
		return fmt.Errorf("create streams: %w", err)
	}

	// Temporal: the pinned CLI's dev server as a supervised child, state in the data dir.
	var engineTasks []service.Task
	temporalAddr, temporalUI := cfg.TemporalAddress, ""
	if temporalAddr == "" {
		tlog, err := os.OpenFile(filepath.Join(cfg.DataDir, "logs", "temporal.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer tlog.Close()
		if err := fsutil.MkdirAll(filepath.Join(cfg.DataDir, "temporal"), 0o700); err != nil {
			return err
		}
		ts, err := temporaldev.Start(ctx, temporaldev.Config{
			IP: "127.0.0.1", Port: cfg.TemporalPort, UIPort: cfg.TemporalUIPort,
			DBFile: filepath.Join(cfg.DataDir, "temporal", "temporal.db"), Stdout: tlog, Stderr: tlog,
			Logger: loudLogger(cfg, log).With("component", "temporal"),
		})
		if err != nil {
			return fmt.Errorf("temporal dev server: %w", err)
		}
		defer func() { _ = ts.Stop() }()
		temporalAddr, temporalUI = ts.HostPort(), ts.UIURL()
		engineTasks = append(engineTasks, ts.Supervise) // restarts the child if it dies
	}

	if cfg.ClickHouseLocal {
		chs, stopClickHouse, err := startClickHouse(ctx, cfg)
		if err != nil {
			return err
		}
		defer stopClickHouse()
		cfg.ClickHouseDSN = chs.DSN("agentid")
	}

	// The platform's own service identities, in the reserved system tenant.
	systemIssuer := cfg.PublicURL + "/t/" + authn.SystemTenant
	adminPath := filepath.Join(cfg.DataDir, "credentials", "bootstrap-admin.json")
	admin, err := loadOrCreateCredential(adminPath, BootstrapAdminClientID, systemIssuer)
	if err != nil {
		return err
	}
	// Bootstrap may move a service identity to a new client (ensureServiceClient); it calls with that one.
	serviceCtx := service.WithHTTPClient(ctx, selfTLS)
	worker, err := loadServiceClient(serviceCtx, cfg.DataDir, systemIssuer, lifecycleWorker)
	if err != nil {
		return err
	}
	registryClient, err := loadServiceClient(serviceCtx, cfg.DataDir, systemIssuer, registryService)
	if err != nil {
		return err
	}

	// Push revocation: the API refuses a revoked token as soon as its revocation is on the stream, and
	// the process is not ready before the denylist has caught up.
	revocations, err := service.NewRevocations(js, log)
	if err != nil {
		return err
	}
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: cfg.PublicURL, Revocations: revocations.Denylist,
		HTTPClient: service.HTTPClient(selfTLS)})
	if err != nil {
		return err
	}
	var serverOpts []grpc.ServerOption
	if tlsConfigs.Server != nil {
		serverOpts = append(serverOpts, grpcx.ServerTLS(tlsConfigs.Server, log))
	}
	// Reflection on: grpcurl and IDEs explore the local API without protos.
	srv := grpcx.NewServer(grpcx.ServerConfig{Logger: log, Verifier: verifier, Reflection: true}, serverOpts...)

	// The registry asks the policy service to admit escalating updates as its own service identity
	// (registry-service: that call and nothing else), whose decisions are recorded.
	registry, err := registryapp.New(registryapp.Config{PolicyAddr: selfAddr(cfg.GRPCAddr)}, registryapp.Deps{Store: storeFor("registry"), Logger: log.With("service", "registry"),
		PolicyPerRPC: authn.PerRPCCredentials(registryClient.tokens, selfTLS != nil), PolicyTLS: selfTLS})
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	issuerCfg := issuerapp.Config{PublicURL: cfg.PublicURL, KEK: kek,
		ProjectionLagAllowance: cfg.ProjectionLagAllowance, DPoPNonceOptional: cfg.DPoPNonceOptional, RateLimits: cfg.RateLimits}
	signingKeys.apply(&issuerCfg)
	issuer, err := issuerapp.New(issuerCfg,
		issuerapp.Deps{Store: storeFor("issuer"), JetStream: componentJS[natsauth.Issuer], Logger: log.With("service", "issuer"),
			Denylist: revocations.Denylist, DenylistReady: revocations.Feed.Ready})
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	policy, err := policyapp.New(policyapp.Config{BundleDir: cfg.BundleDir}, policyapp.Deps{Store: storeFor("policy"), Logger: log.With("service", "policy")})
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	monitor, err := monitorapp.New(monitorapp.Config{DuckDBPath: cfg.DuckDBPath, DuckDBMemoryLimit: cfg.DuckDBMemoryLimit, ClickHouseDSN: cfg.ClickHouseDSN, SIEMWebhookURL: cfg.SIEMWebhookURL, SIEMWebhookSecretFile: cfg.SIEMWebhookSecretFile}, monitorapp.Deps{Store: storeFor("monitor"), Logger: log.With("service", "monitor")})
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	defer monitor.Close()
	defer registry.Close()
	lifecycle, err := lifecycleapp.New(lifecycleapp.Config{
		TemporalHostPort: temporalAddr, RegistryAddr: selfAddr(cfg.GRPCAddr), IssuerAddr: selfAddr(cfg.GRPCAddr), PolicyAddr: selfAddr(cfg.GRPCAddr),
		MonitorAddr: selfAddr(cfg.GRPCAddr), Sweeps: incidents.Sweeps, Deprovision: incidents.Deprovision, Reviews: incidents.Reviews,
		RotationOverlap: incidents.RotationOverlap, RotationSweep: incidents.RotationSweep,
		ReconcileInterval: cfg.ReconcileInterval, EventRetryBackoff: cfg.EventRetryBackoff,
		WorkflowStartTimeout: cfg.WorkflowStartTimeout, IssuerURL: cfg.PublicURL, AgentResources: cfg.AgentResources,
		IncidentWebhookURL: incidents.IncidentWebhookURL, IncidentWebhookSecret: incidents.IncidentWebhookSecret,
		IncidentEscalation: incidents.IncidentEscalation, IncidentEscalationTenants: incidents.IncidentEscalationTenants,
		IncidentPolicy: incidents.IncidentPolicy, ApprovalEscalation: incidents.ApprovalEscalation,
	}, lifecycleapp.Deps{Store: storeFor("lifecycle"), Logger: log.With("service", "lifecycle"), JWKSClient: service.HTTPClient(selfTLS),
		PerRPC: authn.PerRPCCredentials(worker.tokens, selfTLS != nil), TLS: selfTLS})
	if err != nil {
		return fmt.Errorf("lifecycle: %w", err)
	}

	bootstrapped := make(chan struct{})
	bootstrap := func(ctx context.Context) error {
		if err := issuer.Ready(ctx); err != nil {
			return nil // shutting down
		}
		if err := registry.Ready(ctx); err != nil {
			return nil
		}
		jwks, err := admin.PublicJWKS()
		if err != nil {
			return err
		}
		if err := issuer.EnsureClient(ctx, authn.SystemTenant, &issuerv1.Client{
			ClientId: admin.ClientID, PublicJwks: string(jwks),
			Roles: []string{string(authn.RolePlatformAdmin)}, TokenTtlSeconds: 900,
		}); errs.Is(err, errs.KindAlreadyExists) {
			return fmt.Errorf("bootstrap: bootstrap admin client: %w (registered with other keys or roles: use a new --data-dir)", err)
		} else if err != nil {
			return fmt.Errorf("bootstrap: bootstrap admin client: %w", err)
		}
		// The lifecycle worker and the registry hold only their narrow service roles, not
		// platform-admin; a worker client an older version made a platform-admin is disabled and
		// replaced, a registry client a data dir of an older version lacks is created.
		for _, c := range []*serviceClient{worker, registryClient} {
			if err := c.ensure(ctx, issuer, loudLogger(cfg, log)); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
		}
		if err := registry.EnsureTenant(ctx, DefaultTenant, "Default tenant"); err != nil {
			return fmt.Errorf("bootstrap: default tenant: %w", err)
		}
		if err := issuer.EnsureSigningKey(ctx, DefaultTenant); err != nil {
			return fmt.Errorf("bootstrap: default signing key: %w", err)
		}
		close(bootstrapped)
		return nil
	}

	profile, _, err := service.PprofTask(service.PprofConfig{Addr: cfg.PprofAddr, AllowRemote: cfg.PprofAllowRemote, Logger: log})
	if err != nil {
		return err
	}
	if profile != nil {
		engineTasks = append(engineTasks, profile)
	}
	return service.Run(ctx, service.RunConfig{
		GRPCAddr:   cfg.GRPCAddr,
		HTTPAddr:   cfg.HTTPAddr,
		TLS:        tlsConfigs.Server,
		Server:     srv,
		Health:     grpcx.HealthServer(srv),
		Components: []service.Component{registry, issuer, policy, monitor, lifecycle},
		Tasks:      append(engineTasks, bootstrap, revocations.Task()),
		ReadyChecks: []service.ReadyCheck{{Name: "bootstrap", Ready: func(ctx context.Context) error {
			select {
			case <-bootstrapped:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}, revocations.ReadyCheck()},
		NATS:      nc,
		NATSGrace: cfg.NATSGrace,
		Logger:    log,
		// Printed once every component's projections have caught up, bootstrap is done and NATS is
		// connected: the moment /readyz first answers 200.
		OnReady: func() {
			printBanner(cfg, adminPath, natsURL, natsNote, natsCreds, temporalAddr, temporalUI, time.Since(started))
			log.Info("agentid dev ready", "startup", time.Since(started).String())
		},
	})
}

// printBanner tells the developer where everything is (the CLI owns stdout; logs go to the log file).
func printBanner(cfg Config, adminPath, natsURL, natsNote, natsCreds, temporalAddr, temporalUI string, took time.Duration) {
	abs, _ := filepath.Abs(adminPath)
	w := cfg.Stdout
	fmt.Fprintf(w, "agentid is ready (%s)\n", took.Round(time.Millisecond))
	fmt.Fprintf(w, "  gRPC (all services)   %s\n", cfg.GRPCAddr)
	fmt.Fprintf(w, "  OAuth issuer          %s/t/%s\n", cfg.PublicURL, DefaultTenant)
	if natsNote != "" {
		fmt.Fprintf(w, "  NATS                  %s (%s)\n", natsURL, natsNote)
	} else {
		fmt.Fprintf(w, "  NATS                  %s\n", natsURL)
	}
	if natsCreds != "" {
		absCreds, _ := filepath.Abs(natsCreds)
		fmt.Fprintf(w, "  NATS credentials      %s (nkey seeds: admin.nk, one per service, %s%s.nk)\n", absCreds, natsauth.SubscriberPrefix, DefaultTenant)
	}
	fmt.Fprintf(w, "  Temporal              %s (namespace agentid)\n", temporalAddr)
	if temporalUI != "" {
		fmt.Fprintf(w, "  Temporal UI           %s\n", temporalUI)
	}
	if cfg.ClickHouseDSN != "" {
		fmt.Fprintf(w, "  telemetry             %s (ClickHouse)\n", monitorapp.RedactDSN(cfg.ClickHouseDSN))
	} else {
		fmt.Fprintf(w, "  telemetry (DuckDB)    %s\n", cfg.DuckDBPath)
	}
	fmt.Fprintf(w, "  bootstrap admin       %s\n", abs)
	fmt.Fprintf(w, "  logs                  %s\n", logPath(cfg))
	if cfg.TLSCertFile != "" {
		ca := cfg.CAFile
		if ca == "" {
			ca = cfg.TLSCertFile
		}
		fmt.Fprintf(w, "  TLS                   gRPC and HTTP (certificate %s)\n", cfg.TLSCertFile)
		fmt.Fprintf(w, "next: agentctl login --dev --data-dir %s --server %s --ca %s\n", cfg.DataDir, cfg.GRPCAddr, ca)
		return
	}
	fmt.Fprintf(w, "next: agentctl login --dev --data-dir %s --server %s\n", cfg.DataDir, cfg.GRPCAddr)
}

// checkListenTLS refuses to serve in plaintext on an address that is not loopback: tokens and
// credentials would cross the network in the clear.
func checkListenTLS(cfg Config) error {
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		return nil // LoadTLS checks that both are there
	}
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", cfg.GRPCAddr}, {"--http-addr", cfg.HTTPAddr}} {
		if !tlsx.IsLoopbackAddr(a.addr) {
			return fmt.Errorf("%s %s is not a loopback address: serving beyond this machine needs TLS (--tls-cert and --tls-key)", a.flag, a.addr)
		}
	}
	return nil
}

// loadDevTLS loads --tls-cert/--tls-key (server) and the configuration the process's own clients use
// to reach its TLS addresses: --ca, else the certificates of --tls-cert. Both are nil in plaintext.
func loadDevTLS(cfg Config, log *slog.Logger) (service.TLSConfigs, *tls.Config, error) {
	configs, err := service.LoadTLS(service.TLSFiles{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, CAFile: cfg.CAFile}, log)
	if err != nil || configs.Server == nil {
		return configs, nil, err
	}
	if configs.Client != nil {
		return configs, configs.Client, nil
	}
	self, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: cfg.TLSCertFile})
	if err != nil {
		return configs, nil, fmt.Errorf("--tls-cert: %w", err)
	}
	return configs, self, nil
}

// selfAddr is the address the process dials to reach its own gRPC listener: an unspecified host
// (0.0.0.0, ::, empty) becomes 127.0.0.1.
func selfAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

func logPath(cfg Config) string {
	if cfg.LogFile != "" {
		return cfg.LogFile
	}
	return filepath.Join(cfg.DataDir, "logs", "agentid.log")
}

// loudLogger is log plus, unless log already writes to stderr, warnings and errors on stderr too: for
// events the developer must see in the terminal (an engine died and is being restarted).
func loudLogger(cfg Config, log *slog.Logger) *slog.Logger {
	if logPath(cfg) == "-" {
		return log
	}
	return slog.New(slog.NewMultiHandler(log.Handler(),
		slog.NewTextHandler(cfg.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func openLog(cfg Config) (io.Writer, func(), error) {
	p := logPath(cfg)
	if p == "-" {
		return cfg.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}

// loadOrCreateKEK returns the 32-byte key-encryption key that seals signing keys at rest.
func loadOrCreateKEK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
		}
		key, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("%s: want 64 hex characters (a 32-byte key)", path)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// loadOrCreateCredential keeps a service identity's key across restarts; the issuer URL follows the
// current public URL (the key, not the address, is the identity).
func loadOrCreateCredential(path, clientID, issuer string) (*authn.Credential, error) {
	c, err := authn.LoadCredentialFile(path)
	switch {
	case err == nil:
		if c.Issuer == issuer {
			return c, nil
		}
		c.Issuer, c.TokenURL = issuer, issuer+"/oauth2/token"
	case errors.Is(err, fs.ErrNotExist):
		if c, err = authn.NewCredential(authn.SystemTenant, clientID, issuer); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("credential %s: %w", path, err)
	}
	if err := fsutil.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := authn.WriteCredentialFile(path, c); err != nil { // atomic and fsynced with its directory
		return nil, err
	}
	return c, nil
}
