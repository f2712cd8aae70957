package provisionload

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/loadtest/internal/provision"
	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Bounds of the flags: every run stops by itself.
const (
	// MaxAgents bounds --agents.
	MaxAgents = 5000
	// MaxParallelism bounds --parallelism and --token-concurrency.
	MaxParallelism = 256
	// MaxTimeout bounds --timeout.
	MaxTimeout = time.Hour
)

// Main is the provisionload command: it parses args, runs against the `agentid dev` of --data-dir and
// prints the report to stdout. It returns the exit code: 0 after a run, 1 when it failed, 2 for bad
// flags.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("provisionload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `provisionload — provisioning throughput of a running agentid dev.

It registers --agents low-risk dev agents (auto-approved by policy) through the registry API as the
bootstrap admin of --data-dir, --parallelism at a time, watches them become ACTIVE (one ListAgents
sweep of the tenant every --poll), requests each one's first token as soon as it is ACTIVE, and
reports the rate, register -> ACTIVE and register -> first token percentiles, and the CPU of each
--pid during the run. Only loopback targets, plaintext.

Usage: provisionload [flags]

`)
		fs.PrintDefaults()
	}
	dataDir := fs.String("data-dir", ".agentid", "agentid dev data directory (reads credentials/bootstrap-admin.json)")
	server := fs.String("server", "127.0.0.1:7070", "gRPC address of the platform (loopback only)")
	r := Run{Tenant: "default", Agents: 200, Parallelism: 8, TokenConcurrency: 8, Poll: 250 * time.Millisecond, Timeout: 10 * time.Minute}
	fs.StringVar(&r.Tenant, "tenant", r.Tenant, "tenant to register the agents in")
	fs.IntVar(&r.Agents, "agents", r.Agents, fmt.Sprintf("agents to register (1 to %d)", MaxAgents))
	fs.IntVar(&r.Parallelism, "parallelism", r.Parallelism, "RegisterAgent calls in flight at once")
	fs.IntVar(&r.TokenConcurrency, "token-concurrency", r.TokenConcurrency, "first-token requests in flight at once")
	fs.DurationVar(&r.Poll, "poll", r.Poll, "how often the tenant's agents are listed (the resolution of the latencies)")
	fs.DurationVar(&r.Timeout, "timeout", r.Timeout, "bound on the whole run")
	output := fs.String("o", "text", "report format: text or json")
	fs.Func("pid", "process id whose CPU during the run is reported (repeatable)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a process id", v)
		}
		r.PIDs = append(r.PIDs, n)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var bad []error
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Errorf("unexpected arguments %q: provisionload takes flags only", fs.Args()))
	}
	if err := tokenload.CheckLoopbackAddr(*server); err != nil {
		bad = append(bad, fmt.Errorf("--server: %w", err))
	}
	if r.Agents < 1 || r.Agents > MaxAgents {
		bad = append(bad, fmt.Errorf("--agents: must be between 1 and %d, got %d", MaxAgents, r.Agents))
	}
	if r.Parallelism < 1 || r.Parallelism > MaxParallelism {
		bad = append(bad, fmt.Errorf("--parallelism: must be between 1 and %d, got %d", MaxParallelism, r.Parallelism))
	}
	if r.TokenConcurrency < 1 || r.TokenConcurrency > MaxParallelism {
		bad = append(bad, fmt.Errorf("--token-concurrency: must be between 1 and %d, got %d", MaxParallelism, r.TokenConcurrency))
	}
	if r.Poll < 10*time.Millisecond || r.Poll > 10*time.Second {
		bad = append(bad, fmt.Errorf("--poll: must be between 10ms and 10s, got %v", r.Poll))
	}
	if r.Timeout <= 0 || r.Timeout > MaxTimeout {
		bad = append(bad, fmt.Errorf("--timeout: must be more than 0 and at most %v, got %v", MaxTimeout, r.Timeout))
	}
	if *output != "text" && *output != "json" {
		bad = append(bad, fmt.Errorf("-o: want text or json, got %q", *output))
	}
	if err := errors.Join(bad...); err != nil {
		fmt.Fprintln(stderr, "provisionload:", err)
		return 2
	}
	rep, err := r.connectAndDo(ctx, *dataDir, *server, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "provisionload:", err)
		return 1
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "provisionload:", err)
		return 1
	}
	return 0
}

// connectAndDo connects to the platform as the bootstrap admin of dataDir and does the run.
func (r Run) connectAndDo(ctx context.Context, dataDir, server string, progress io.Writer) (*Report, error) {
	admin, err := authn.LoadCredentialFile(tokenload.AdminCredentialPath(dataDir))
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := tokenload.CheckLoopbackURL(admin.TokenURL); err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential token_url: %w", err)
	}
	issuer, err := tokenload.TenantIssuer(admin.Issuer, r.Tenant)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential: %w", err)
	}
	if strings.HasPrefix(issuer, "https://") {
		return nil, fmt.Errorf("--data-dir: the platform serves TLS (%s): provisionload speaks plaintext only", issuer)
	}
	httpClient := tokenclient.NewHTTPClient(r.TokenConcurrency+4, 30*time.Second)
	conn, err := grpcx.DialTLS(server, nil, authn.PerRPCCredentials(admin.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, httpClient)), false))
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	defer func() { _ = conn.Close() }()
	r.Registry = registryv1.NewRegistryServiceClient(conn)
	r.Tokens = &tokenclient.Client{HTTP: httpClient, TokenURL: issuer + "/oauth2/token", Audience: issuer, Scope: provision.Scope}
	r.Progress = func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }
	fmt.Fprintf(progress, "registering %d agents in tenant %s (%d at a time) on %d CPUs...\n", r.Agents, r.Tenant, r.Parallelism, runtime.NumCPU())
	return r.Do(ctx)
}

// WriteText prints the report for people.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "agents %d, registered %d at a time in %.1fs\n", rep.Agents, rep.Parallelism, rep.RegisterSeconds)
	fmt.Fprintf(&b, "all ACTIVE after %.1fs: %.1f provisionings/s (sustained, 10th-90th percentile: %.1f/s); all with a token after %.1fs\n",
		rep.ActiveSeconds, rep.Rate, rep.SustainedRate, rep.TokenSeconds)
	for _, row := range []struct {
		name string
		s    stats.Summary
	}{{"register -> ACTIVE", rep.RegisterToActive}, {"register -> first token", rep.RegisterToToken}} {
		fmt.Fprintf(&b, "%-24s p50 %s  p90 %s  p99 %s  max %s\n", row.name,
			stats.Format(row.s.P50), stats.Format(row.s.P90), stats.Format(row.s.P99), stats.Format(row.s.Max))
	}
	for _, p := range rep.Processes {
		if p.Error != "" {
			fmt.Fprintf(&b, "pid %d %s: %s\n", p.PID, p.Name, p.Error)
			continue
		}
		fmt.Fprintf(&b, "pid %d %-20s CPU %.2fs, %.1f ms per agent\n", p.PID, p.Name, p.CPUSeconds, p.CPUPerAgentMillis)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
