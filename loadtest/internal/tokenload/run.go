package tokenload

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/loadtest/internal/procfs"
	"github.com/agentid/agentid/loadtest/internal/provision"
	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// AdminCredentialPath is where `agentid dev` writes the bootstrap admin credential in its data dir.
func AdminCredentialPath(dataDir string) string {
	return filepath.Join(dataDir, "credentials", "bootstrap-admin.json")
}

// TenantIssuer derives a tenant's issuer identifier from another tenant's ({base}/t/{tenant}).
func TenantIssuer(issuer, tenant string) (string, error) {
	i := strings.LastIndex(issuer, "/t/")
	if i < 0 {
		return "", fmt.Errorf("issuer %q is not of the form {base}/t/{tenant}", issuer)
	}
	return issuer[:i] + "/t/" + tenant, nil
}

// checkScheme refuses a platform whose issuer scheme does not match --ca, before any request: an
// https issuer needs --ca (its gRPC serves TLS too), an http one serves plaintext and --ca would not
// be used for it.
func checkScheme(tokenURL string, withCA bool) error {
	https := strings.HasPrefix(tokenURL, "https://")
	switch {
	case https && !withCA:
		return fmt.Errorf("--ca: the platform serves TLS (token_url %s): give --ca with the CA of its certificate", tokenURL)
	case !https && withCA:
		return fmt.Errorf("--ca: the platform serves plaintext (token_url %s): drop --ca, or start it with --tls-cert", tokenURL)
	}
	return nil
}

// Run provisions the agents, sends the token requests and returns the report. Progress lines go to
// progress. The request phase stops early, with a partial report, when ctx ends.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	procs := make([]Process, len(cfg.PIDs))
	for i, pid := range cfg.PIDs {
		m, err := procfs.ReadMemory(pid)
		if err != nil {
			return nil, fmt.Errorf("--pid %d: %w", pid, err)
		}
		procs[i] = Process{PID: pid, Name: m.Name, StartRSSKiB: m.RSSKiB}
	}
	admin, err := authn.LoadCredentialFile(AdminCredentialPath(cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := CheckLoopbackURL(admin.TokenURL); err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential token_url: %w", err)
	}
	issuer, err := TenantIssuer(admin.Issuer, cfg.Tenant)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential: %w", err)
	}
	if err := CheckLoopbackURL(issuer); err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential issuer: %w", err)
	}
	tlsConfig, err := cfg.ClientTLS()
	if err != nil {
		return nil, err
	}
	if err := checkScheme(admin.TokenURL, tlsConfig != nil); err != nil {
		return nil, err
	}
	httpClient := tokenclient.NewTLSHTTPClient(cfg.Concurrency+cfg.RegisterParallelism, 30*time.Second, tlsConfig)
	// The admin's token source fetches its tokens with the same client, so over TLS it verifies --ca.
	adminCtx := context.WithValue(ctx, oauth2.HTTPClient, httpClient)
	conn, err := grpcx.DialTLS(cfg.Server, tlsConfig, authn.PerRPCCredentials(admin.TokenSource(adminCtx), false))
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	defer func() { _ = conn.Close() }()

	client := &tokenclient.Client{
		HTTP:     httpClient,
		TokenURL: issuer + "/oauth2/token",
		Audience: issuer,
		Scope:    provision.Scope,
	}
	rep := &Report{
		Target: Target{Server: cfg.Server, Issuer: issuer, TokenURL: client.TokenURL, Tenant: cfg.Tenant, CPUs: runtime.NumCPU()},
		Settings: Settings{Agents: cfg.Agents, Concurrency: cfg.Concurrency, DurationSeconds: cfg.Duration.Seconds(),
			Requests: cfg.Requests, Rate: cfg.Rate, Mode: "closed", Presigned: cfg.Presign},
	}
	if cfg.Rate > 0 {
		rep.Settings.Mode = "open"
	}

	fmt.Fprintf(progress, "provisioning %d agents in tenant %s (%d at a time)...\n", cfg.Agents, cfg.Tenant, min(cfg.Agents, cfg.RegisterParallelism))
	provStart := time.Now()
	agents, err := provision.Provision(ctx, provision.Config{
		Registry:    registryv1.NewRegistryServiceClient(conn),
		Tokens:      client,
		Tenant:      cfg.Tenant,
		Count:       cfg.Agents,
		Parallelism: cfg.RegisterParallelism,
		Timeout:     cfg.ProvisionTimeout,
	})
	if err != nil {
		return nil, err
	}
	toActive, toToken := stats.NewHistogram(), stats.NewHistogram()
	ids := make([]*tokenclient.Identity, len(agents))
	for i, a := range agents {
		toActive.Record(a.RegisterToActive)
		toToken.Record(a.RegisterToToken)
		ids[i] = a.Identity
	}
	rep.Provisioning = Provisioning{Agents: len(agents), ElapsedSeconds: time.Since(provStart).Seconds(),
		RegisterToActive: toActive.Summary(), RegisterToToken: toToken.Summary()}
	fmt.Fprintf(progress, "provisioned %d agents in %.1fs; sending token requests (concurrency %d)...\n",
		len(agents), rep.Provisioning.ElapsedSeconds, cfg.Concurrency)

	var assertions []string
	if cfg.Presign {
		signStart := time.Now()
		if assertions, err = PreSign(ctx, ids, client.Audience, cfg.Requests); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "pre-signed %d assertions in %.1fs\n", len(assertions), time.Since(signStart).Seconds())
	}
	cpuBefore := make([]time.Duration, len(procs))
	for i := range procs {
		cpuBefore[i], _ = procfs.ReadCPU(procs[i].PID)
	}
	selfBefore, _ := procfs.ReadCPU(os.Getpid())
	machineBefore, _ := procfs.ReadMachineCPU()
	res := Load(ctx, LoadConfig{Client: client, Identities: ids, Concurrency: cfg.Concurrency,
		Duration: cfg.Duration, Requests: cfg.Requests, Rate: cfg.Rate, Assertions: assertions})
	rep.Tokens = TokensOf(res)
	if self, err := procfs.ReadCPU(os.Getpid()); err == nil {
		rep.Tokens.GeneratorCPUSeconds = (self - selfBefore).Seconds()
	}
	if m, err := procfs.ReadMachineCPU(); err == nil {
		rep.Tokens.MachineCPUBusySeconds = (m.Busy - machineBefore.Busy).Seconds()
	}
	for i := range procs {
		cpu, cerr := procfs.ReadCPU(procs[i].PID)
		m, err := procfs.ReadMemory(procs[i].PID)
		if err = errors.Join(err, cerr); err != nil {
			procs[i].Error = err.Error()
			continue
		}
		procs[i].EndRSSKiB, procs[i].PeakRSSKiB = m.RSSKiB, m.PeakRSSKiB
		procs[i].LoadCPUSeconds = (cpu - cpuBefore[i]).Seconds()
	}
	rep.Processes = procs
	return rep, nil
}

// Main is the tokenload command: it parses args, runs and prints the report to stdout. It returns
// the exit code: 0 after a run (whatever its errors count), 1 when the run failed, 2 for bad flags.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenload:", err)
		return 2
	}
	rep, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "tokenload:", err)
		return 1
	}
	if cfg.Output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tokenload:", err)
		return 1
	}
	return 0
}
