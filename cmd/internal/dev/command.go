// Package dev implements `agentid dev`: the whole platform in one process — embedded NATS JetStream,
// the Temporal dev server as a supervised child process, the DuckDB telemetry file and the five
// services on one gRPC and one HTTP address.
package dev

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	issuerapp "github.com/agentid/agentid/services/issuer/app"
	lifecycleapp "github.com/agentid/agentid/services/lifecycle/app"
)

// Execute runs the agentid command line and returns the exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "agentid",
		Short:         "agentid: owned, short-lived, policy-checked and audited identities for AI agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDevCmd(stdout, stderr), newSecretsCmd(stdout))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "agentid:", err)
		return 1
	}
	return 0
}

// ClickHouseDSNEnv names the environment variable read when --clickhouse-dsn is not given.
const ClickHouseDSNEnv = "AGENTID_CLICKHOUSE_DSN"

func newDevCmd(stdout, stderr io.Writer) *cobra.Command {
	cfg := DefaultConfig()
	var logLevel string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform on one machine (embedded NATS, Temporal dev server, DuckDB)",
		Long: `dev runs every agentid service in one process on embedded engines, with its state in --data-dir
so that a restart keeps it. It prints the endpoints, the Temporal UI address and where the bootstrap
admin credential was written; Ctrl-C stops everything. Any engine can be external instead:
--nats-url, --temporal-address, --clickhouse-dsn (telemetry in ClickHouse instead of DuckDB).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			cfg.LogLevel = lvl
			cfg.Stdout, cfg.Stderr = stdout, stderr
			if cfg.ClickHouseDSN == "" {
				cfg.ClickHouseDSN = os.Getenv(ClickHouseDSNEnv)
			}
			cfg.GoMemoryLimit, cfg.goMemoryLimitSource = resolveGoMemoryLimit(cfg.GoMemoryLimit, cmd.Flags().Changed("go-memory-limit"))
			return Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where state lives (events, workflows, telemetry, keys)")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "gRPC listen address (all five services)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP listen address (OAuth/OIDC endpoints, /metrics, /livez, /readyz)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "external base URL of the HTTP address (default http://<http-addr>)")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "use this NATS server instead of the embedded one")
	f.IntVar(&cfg.NATSPort, "nats-port", cfg.NATSPort, "client port of the embedded NATS server")
	f.StringVar(&cfg.NATSNkey, "nats-nkey", "", "nkey seed file to connect to the --nats-url server with (the embedded server uses the identities generated in <data-dir>/"+NATSCredentialsDir+")")
	f.StringVar(&cfg.NATSCA, "nats-ca", "", "CA bundle (PEM) that the --nats-url server's TLS certificate is verified against")
	f.StringVar(&cfg.NATSSync, "nats-sync", cfg.NATSSync, "fsync policy of the embedded NATS server: always (every event fsynced before it is acknowledged) or interval (nats-server's default, every 2 minutes: faster, but a power loss can drop acknowledged events)")
	f.DurationVar(&cfg.NATSGrace, "nats-grace", cfg.NATSGrace, "how long NATS may be unreachable before /readyz and gRPC health report NOT_SERVING")
	f.StringVar(&cfg.TemporalAddress, "temporal-address", "", "use this Temporal frontend (host:port) instead of the dev server")
	f.IntVar(&cfg.TemporalPort, "temporal-port", cfg.TemporalPort, "frontend port of the Temporal dev server")
	f.IntVar(&cfg.TemporalUIPort, "temporal-ui-port", cfg.TemporalUIPort, "UI port of the Temporal dev server")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", cfg.ReconcileInterval, "how often the lifecycle reconciler starts missing runs and disables clients of agents that are not ACTIVE (at least 1s)")
	f.DurationSliceVar(&cfg.EventRetryBackoff, "event-retry-backoff", nil, "redelivery delays of agent events whose lifecycle run cannot start yet, e.g. 1s,5s,30s (the last repeats, with no cap on retries; default 1s up to 5m)")
	f.DurationVar(&cfg.WorkflowStartTimeout, "workflow-start-timeout", 0, "bound of one attempt to start a lifecycle run while Temporal is unreachable (default 10s)")
	f.StringVar(&cfg.DuckDBPath, "duckdb-path", "", "telemetry DuckDB file (default <data-dir>/telemetry.duckdb)")
	f.Int64Var(&cfg.DuckDBMemoryLimit, "duckdb-memory-limit", 0, "bytes the telemetry DuckDB's buffer pool may hold (at least 32 MiB; default 64 MiB)")
	f.Int64Var(&cfg.GoMemoryLimit, "go-memory-limit", cfg.GoMemoryLimit, "soft limit in bytes on this process's Go memory (heap, stacks; not DuckDB's pool, not the Temporal or ClickHouse child processes): the collector works harder, up to about half the CPU, to stay under it; at least 128 MiB; 0 leaves the runtime's own ($GOMEMLIMIT, or none). Without the flag: $GOMEMLIMIT when set, else the default")
	f.BoolVar(&cfg.ClickHouseLocal, "clickhouse", false, "run Debian's clickhouse-server as a child process (data in <data-dir>/clickhouse, loopback ports) and store telemetry there")
	f.StringVar(&cfg.ClickHouseDSN, "clickhouse-dsn", "", "store telemetry in ClickHouse instead of DuckDB, e.g. clickhouse://default@127.0.0.1:9000/agentid (default $"+ClickHouseDSNEnv+")")
	f.StringVar(&cfg.SIEMWebhookURL, "siem-webhook-url", "", "SIEM webhook receiving the monitor's signed OCSF JSON POSTs (https, or http to loopback; docs/siem.md)")
	f.StringVar(&cfg.SIEMWebhookSecretFile, "siem-webhook-secret-file", "", "file holding the --siem-webhook-url HMAC-SHA256 secret (at least 16 bytes)")
	f.StringVar(&cfg.Incidents.WebhookURL, lifecycleapp.IncidentWebhookURLFlag, "", lifecycleapp.IncidentWebhookURLUsage)
	f.StringVar(&cfg.Incidents.WebhookSecretFile, lifecycleapp.IncidentWebhookSecretFileFlag, "", lifecycleapp.IncidentWebhookSecretFileUsage)
	f.StringVar(&cfg.Incidents.Escalation, lifecycleapp.IncidentEscalationFlag, "", lifecycleapp.IncidentEscalationUsage)
	f.StringArrayVar(&cfg.Incidents.EscalationTenants, lifecycleapp.IncidentEscalationTenantFlag, nil, lifecycleapp.IncidentEscalationTenantUsage)
	f.StringArrayVar(&cfg.Incidents.Policy, lifecycleapp.IncidentPolicyFlag, nil, lifecycleapp.IncidentPolicyUsage)
	f.StringVar(&cfg.Approvals.Escalation, lifecycleapp.ApprovalEscalationFlag, "", lifecycleapp.ApprovalEscalationUsage)
	f.StringArrayVar(&cfg.Approvals.EscalationTenants, lifecycleapp.ApprovalEscalationTenantFlag, nil, lifecycleapp.ApprovalEscalationTenantUsage)
	f.StringVar(&cfg.Sweeps.ExpiredEvery, lifecycleapp.SweepExpiredEveryFlag, "", lifecycleapp.SweepExpiredEveryUsage)
	f.StringVar(&cfg.Sweeps.InactiveEvery, lifecycleapp.SweepInactiveEveryFlag, "", lifecycleapp.SweepInactiveEveryUsage)
	f.StringVar(&cfg.Sweeps.OrphanedEvery, lifecycleapp.SweepOrphanedEveryFlag, "", lifecycleapp.SweepOrphanedEveryUsage)
	f.IntVar(&cfg.Sweeps.InactiveDays, lifecycleapp.SweepInactiveDaysFlag, 0, lifecycleapp.SweepInactiveDaysUsage)
	f.StringVar(&cfg.Sweeps.InactiveAction, lifecycleapp.SweepInactiveActionFlag, "", lifecycleapp.SweepInactiveActionUsage)
	f.StringVar(&cfg.Sweeps.OrphanedAction, lifecycleapp.SweepOrphanedActionFlag, "", lifecycleapp.SweepOrphanedActionUsage)
	f.StringVar(&cfg.Sweeps.MaxRetirements, lifecycleapp.SweepMaxRetirementsFlag, "", lifecycleapp.SweepMaxRetirementsUsage)
	f.StringVar(&cfg.Sweeps.MaxRetirementPercent, lifecycleapp.SweepMaxRetirementPercentFlag, "", lifecycleapp.SweepMaxRetirementPercentUsage)
	f.StringVar(&cfg.Sweeps.SignOffs, lifecycleapp.DeprovisionSignOffsFlag, "", lifecycleapp.DeprovisionSignOffsUsage)
	f.StringVar(&cfg.Sweeps.NoSignOffTriggers, lifecycleapp.DeprovisionNoSignOffTriggersFlag, "", lifecycleapp.DeprovisionNoSignOffTriggersUsage)
	f.StringVar(&cfg.Sweeps.RemindEvery, lifecycleapp.DeprovisionRemindEveryFlag, "", lifecycleapp.DeprovisionRemindEveryUsage)
	f.StringVar(&cfg.Sweeps.EscalateAfter, lifecycleapp.DeprovisionEscalateAfterFlag, "", lifecycleapp.DeprovisionEscalateAfterUsage)
	f.StringVar(&cfg.Reviews.Schedule, lifecycleapp.ReviewScheduleFlag, "", lifecycleapp.ReviewScheduleUsage)
	f.IntVar(&cfg.Reviews.UsageDays, lifecycleapp.ReviewUsageDaysFlag, 0, lifecycleapp.ReviewUsageDaysUsage)
	f.IntVar(&cfg.Reviews.AnswerDays, lifecycleapp.ReviewAnswerDaysFlag, 0, lifecycleapp.ReviewAnswerDaysUsage)
	f.StringVar(&cfg.Rotation.Overlap, lifecycleapp.RotationOverlapFlag, "", lifecycleapp.RotationOverlapUsage)
	f.StringVar(&cfg.Rotation.DueDays, lifecycleapp.RotationDueDaysFlag, "", lifecycleapp.RotationDueDaysUsage)
	f.IntVar(&cfg.Rotation.RemindDays, lifecycleapp.RotationRemindDaysFlag, 0, lifecycleapp.RotationRemindDaysUsage)
	f.StringVar(&cfg.Rotation.SweepEvery, lifecycleapp.SweepRotationEveryFlag, "", lifecycleapp.SweepRotationEveryUsage)
	f.StringSliceVar(&cfg.AgentResources, "agent-resource", cfg.AgentResources, "RFC 8707 resources registered for every agent's client: the audience of agents' tokens (never the platform API)")
	f.StringVar(&cfg.BundleDir, "bundle-dir", "", "policy bundle directory (default: the built-in bundle)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.LogFile, "log-file", "", "JSON log file (default <data-dir>/logs/agentid.log; - for stderr)")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC trace collector host:port (empty: no export)")
	f.StringVar(&cfg.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this host:port (empty: off; loopback only unless --pprof-allow-remote)")
	f.BoolVar(&cfg.PprofAllowRemote, "pprof-allow-remote", false, "allow a --pprof-addr that is not loopback")
	f.DurationVar(&cfg.ProjectionLagAllowance, issuerapp.ProjectionLagAllowanceFlag, cfg.ProjectionLagAllowance, issuerapp.ProjectionLagAllowanceUsage)
	f.BoolVar(&cfg.DPoPNonceOptional, issuerapp.DPoPNonceOptionalFlag, false, issuerapp.DPoPNonceOptionalUsage)
	f.Float64Var(&cfg.RateLimits.PerIP, issuerapp.RatePerIPFlag, 0, issuerapp.RatePerIPUsage)
	f.IntVar(&cfg.RateLimits.PerIPBurst, issuerapp.RatePerIPBurstFlag, 0, issuerapp.RatePerIPBurstUsage)
	f.Float64Var(&cfg.RateLimits.PerClient, issuerapp.RatePerClientFlag, 0, issuerapp.RatePerClientUsage)
	f.IntVar(&cfg.RateLimits.PerClientBurst, issuerapp.RatePerClientBurstFlag, 0, issuerapp.RatePerClientBurstUsage)
	f.Float64Var(&cfg.RateLimits.DenialsPerSecond, issuerapp.TelemetryDenialsPerSecondFlag, 0, issuerapp.TelemetryDenialsPerSecondUsage)
	cfg.SigningKeys.Register(f)
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve gRPC and HTTP over TLS with this certificate chain (PEM), reloaded when it changes (default: plaintext, loopback addresses only)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "private key (PEM) of --tls-cert")
	f.StringVar(&cfg.CAFile, "ca", "", "CA bundle (PEM) the process's own clients verify --tls-cert against (default: the certificates in --tls-cert)")
	return cmd
}
