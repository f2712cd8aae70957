// Command lifecycle runs the lifecycle service on its own: the Temporal worker of the provisioning and
// deprovisioning workflows, the consumer that starts them from agent events, and
// agentid.lifecycle.v1.LifecycleService.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/tlsx"
	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/services/lifecycle/internal/lifecycle"
)

func main() {
	fs := flag.NewFlagSet(app.Name, flag.ContinueOnError)
	flags := service.DefaultFlags("127.0.0.1:7075", "127.0.0.1:8075")
	flags.Register(fs)
	cfg := app.Config{
		TemporalHostPort: app.DefaultTemporalHostPort, Namespace: app.DefaultNamespace,
		RegistryAddr: "127.0.0.1:7071", IssuerAddr: "127.0.0.1:7072", PolicyAddr: "127.0.0.1:7073",
	}
	fs.StringVar(&cfg.TemporalHostPort, "temporal-address", cfg.TemporalHostPort, "Temporal frontend host:port")
	fs.StringVar(&cfg.Namespace, "temporal-namespace", cfg.Namespace, "Temporal namespace")
	fs.StringVar(&cfg.RegistryAddr, "registry-addr", cfg.RegistryAddr, "gRPC address of the registry")
	fs.StringVar(&cfg.IssuerAddr, "issuer-addr", cfg.IssuerAddr, "gRPC address of the issuer")
	fs.StringVar(&cfg.PolicyAddr, "policy-addr", cfg.PolicyAddr, "gRPC address of the policy service")
	fs.StringVar(&cfg.MonitorAddr, "monitor-addr", "127.0.0.1:7074", "gRPC address of the monitor (the inactivity sweep asks it for activity; empty: that sweep fails)")
	var sweeps app.SweepFlags
	fs.StringVar(&sweeps.ExpiredEvery, app.SweepExpiredEveryFlag, "", app.SweepExpiredEveryUsage)
	fs.StringVar(&sweeps.InactiveEvery, app.SweepInactiveEveryFlag, "", app.SweepInactiveEveryUsage)
	fs.StringVar(&sweeps.OrphanedEvery, app.SweepOrphanedEveryFlag, "", app.SweepOrphanedEveryUsage)
	fs.IntVar(&sweeps.InactiveDays, app.SweepInactiveDaysFlag, 0, app.SweepInactiveDaysUsage)
	fs.StringVar(&sweeps.InactiveAction, app.SweepInactiveActionFlag, "", app.SweepInactiveActionUsage)
	fs.StringVar(&sweeps.OrphanedAction, app.SweepOrphanedActionFlag, "", app.SweepOrphanedActionUsage)
	fs.StringVar(&sweeps.MaxRetirements, app.SweepMaxRetirementsFlag, "", app.SweepMaxRetirementsUsage)
	fs.StringVar(&sweeps.MaxRetirementPercent, app.SweepMaxRetirementPercentFlag, "", app.SweepMaxRetirementPercentUsage)
	fs.StringVar(&sweeps.SignOffs, app.DeprovisionSignOffsFlag, "", app.DeprovisionSignOffsUsage)
	fs.StringVar(&sweeps.NoSignOffTriggers, app.DeprovisionNoSignOffTriggersFlag, "", app.DeprovisionNoSignOffTriggersUsage)
	fs.StringVar(&sweeps.RemindEvery, app.DeprovisionRemindEveryFlag, "", app.DeprovisionRemindEveryUsage)
	fs.StringVar(&sweeps.EscalateAfter, app.DeprovisionEscalateAfterFlag, "", app.DeprovisionEscalateAfterUsage)
	var reviews app.ReviewFlags
	fs.StringVar(&reviews.Schedule, app.ReviewScheduleFlag, "", app.ReviewScheduleUsage)
	fs.IntVar(&reviews.UsageDays, app.ReviewUsageDaysFlag, 0, app.ReviewUsageDaysUsage)
	fs.IntVar(&reviews.AnswerDays, app.ReviewAnswerDaysFlag, 0, app.ReviewAnswerDaysUsage)
	var rotation app.RotationFlags
	fs.StringVar(&rotation.Overlap, app.RotationOverlapFlag, "", app.RotationOverlapUsage)
	fs.StringVar(&rotation.DueDays, app.RotationDueDaysFlag, "", app.RotationDueDaysUsage)
	fs.IntVar(&rotation.RemindDays, app.RotationRemindDaysFlag, 0, app.RotationRemindDaysUsage)
	fs.StringVar(&rotation.SweepEvery, app.SweepRotationEveryFlag, "", app.SweepRotationEveryUsage)
	fs.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", lifecycle.DefaultReconcileInterval,
		"time between reconciler passes (missing or failed runs started, clients of agents neither ACTIVE nor PENDING disabled); at least 1s")
	fs.DurationVar(&cfg.StuckAfter, "stuck-after", lifecycle.DefaultStuckAfter,
		"how long an agent may stay PENDING or RETIRING without a running run before lifecycle_stuck_agents counts it")
	fs.Func("agent-resource", "RFC 8707 resource (absolute URI) registered for every agent client the worker creates: its tokens' audience (repeat for several; without any, agents get no token)", func(s string) error {
		cfg.AgentResources = append(cfg.AgentResources, s)
		return nil
	})
	var incidents app.IncidentFlags
	fs.StringVar(&incidents.WebhookURL, app.IncidentWebhookURLFlag, "", app.IncidentWebhookURLUsage)
	fs.StringVar(&incidents.WebhookSecretFile, app.IncidentWebhookSecretFileFlag, "", app.IncidentWebhookSecretFileUsage)
	fs.StringVar(&incidents.Escalation, app.IncidentEscalationFlag, "", app.IncidentEscalationUsage)
	fs.Func(app.IncidentEscalationTenantFlag, app.IncidentEscalationTenantUsage, func(s string) error {
		incidents.EscalationTenants = append(incidents.EscalationTenants, s)
		return nil
	})
	fs.Func(app.IncidentPolicyFlag, app.IncidentPolicyUsage, func(s string) error {
		incidents.Policy = append(incidents.Policy, s)
		return nil
	})
	var approvals app.ApprovalFlags
	fs.StringVar(&approvals.Escalation, app.ApprovalEscalationFlag, "", app.ApprovalEscalationUsage)
	fs.Func(app.ApprovalEscalationTenantFlag, app.ApprovalEscalationTenantUsage, func(s string) error {
		approvals.EscalationTenants = append(approvals.EscalationTenants, s)
		return nil
	})
	credentials := fs.String("credentials", "", "credential file of the lifecycle worker's service identity (required)")
	var temporalTLS tlsx.ClientOptions
	fs.StringVar(&temporalTLS.CAFile, "temporal-ca", "", "connect to Temporal over TLS, verifying its frontend against this CA file (PEM) (empty: plaintext)")
	fs.StringVar(&temporalTLS.CertFile, "temporal-tls-cert", "", "client certificate (PEM) presented to Temporal for mTLS, reloaded when it changes (with --temporal-ca)")
	fs.StringVar(&temporalTLS.KeyFile, "temporal-tls-key", "", "private key (PEM) of --temporal-tls-cert")
	temporalJWT := fs.Bool("temporal-jwt", true, "with --temporal-ca, send a bearer token of audience "+authn.TemporalAudience+
		" (from --credentials) on every Temporal call, for the frontend's JWT authorizer; false sends none")
	os.Exit(service.Main(app.Name, fs, &flags, func(ctx context.Context, env *service.Env) (service.Component, error) {
		if err := incidents.Apply(&cfg); err != nil {
			return nil, err
		}
		if err := sweeps.Apply(&cfg); err != nil {
			return nil, err
		}
		if err := reviews.Apply(&cfg); err != nil {
			return nil, err
		}
		if err := rotation.Apply(&cfg); err != nil {
			return nil, err
		}
		if err := approvals.Apply(&cfg); err != nil {
			return nil, err
		}
		if *credentials == "" {
			return nil, errors.New("--credentials is required: the lifecycle worker calls the other services as its own identity")
		}
		cred, err := authn.LoadCredentialFile(*credentials)
		if err != nil {
			return nil, err
		}
		if err := authn.CheckIssuerURL(cred.TokenURL); err != nil {
			return nil, fmt.Errorf("--credentials %s: token_url: %w", *credentials, err)
		}
		// Its token endpoint is verified against --ca too; tokens go over TLS unless every peer is loopback.
		tokenCtx := service.WithHTTPClient(ctx, env.ClientTLS)
		perRPC := authn.PerRPCCredentials(cred.TokenSource(tokenCtx), env.ClientTLS != nil)
		cfg.IssuerURL = flags.IssuerURL
		temporal, err := temporalClientTLS(temporalTLS, env.Logger)
		if err != nil {
			return nil, err
		}
		deps := app.Deps{Store: env.Store, Logger: env.Logger, PerRPC: perRPC, TLS: env.ClientTLS,
			JWKSClient: service.HTTPClient(env.ClientTLS), TemporalTLS: temporal}
		// The token only ever goes over TLS: without --temporal-ca none is sent.
		if temporal != nil && *temporalJWT {
			deps.TemporalHeaders = app.TemporalBearer(cred.TokenSourceFor(tokenCtx, authn.TokenRequest{Resources: []string{authn.TemporalAudience}}))
		}
		return app.New(cfg, deps)
	}))
}

// temporalClientTLS loads --temporal-ca, --temporal-tls-cert and --temporal-tls-key; nil without a CA.
func temporalClientTLS(o tlsx.ClientOptions, log *slog.Logger) (*tls.Config, error) {
	switch {
	case o.CAFile == "" && (o.CertFile != "" || o.KeyFile != ""):
		return nil, errors.New("--temporal-tls-cert and --temporal-tls-key need --temporal-ca (TLS to Temporal)")
	case (o.CertFile == "") != (o.KeyFile == ""):
		return nil, errors.New("--temporal-tls-cert and --temporal-tls-key go together")
	case o.CAFile == "":
		return nil, nil
	}
	o.Reload.Logger = log
	cfg, err := tlsx.NewClientConfig(o)
	var fe *tlsx.FileError
	if errors.As(err, &fe) {
		flag := map[tlsx.FileKind]string{tlsx.CAFile: "--temporal-ca", tlsx.CertFile: "--temporal-tls-cert", tlsx.KeyFile: "--temporal-tls-key"}[fe.Kind]
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return cfg, err
}
