package seed

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
)

// MaxAgents bounds --agents.
const MaxAgents = 10_000_000

// CLIConfig is one run of the seedagents command.
type CLIConfig struct {
	// NATSURL is the NATS server to write to (loopback only); ignored with DataDir.
	NATSURL string
	// NATSNkey is the nkey seed file to connect to NATSURL with (agentid dev's embedded server accepts
	// only its identities: <data-dir>/credentials/nats/registry.nk writes agent events).
	NATSNkey string
	// DataDir, when set, is the data directory of a stopped `agentid dev`: its JetStream store
	// (<data-dir>/nats) is opened by a NATS server in this process.
	DataDir string
	// Tenant the agents are seeded in; it must exist.
	Tenant string
	// Agents is the number of agents.
	Agents int
	// First is the index of the first agent.
	First int
	// Concurrency is how many agents are written at once.
	Concurrency int
	// Consumer is the work consumer whose seeded deliveries are acknowledged ("" for none).
	Consumer string
}

// DefaultCLIConfig returns the defaults of the flags.
func DefaultCLIConfig() CLIConfig {
	return CLIConfig{
		NATSURL:     "nats://127.0.0.1:4222",
		Tenant:      "default",
		Agents:      100_000,
		Concurrency: DefaultConcurrency,
		Consumer:    LifecycleConsumer,
	}
}

// Validate checks every setting; an error names the flag at fault.
func (c CLIConfig) Validate() error {
	var errs []error
	if c.DataDir == "" {
		u, err := url.Parse(c.NATSURL)
		switch {
		case err != nil || u.Scheme != "nats" || u.Host == "":
			errs = append(errs, fmt.Errorf("--nats-url: %q is not a nats://host:port URL", c.NATSURL))
		default:
			if err := tokenload.CheckLoopbackAddr(hostPort(u)); err != nil {
				errs = append(errs, fmt.Errorf("--nats-url: %v", err))
			}
		}
	}
	if !validTenant(c.Tenant) {
		errs = append(errs, fmt.Errorf("--tenant: %q is not a tenant id (lowercase letters, digits and dashes, 2 to 63 characters)", c.Tenant))
	}
	if c.Agents < 1 || c.Agents > MaxAgents {
		errs = append(errs, fmt.Errorf("--agents: must be between 1 and %d, got %d", MaxAgents, c.Agents))
	}
	if c.First < 0 {
		errs = append(errs, fmt.Errorf("--first: must not be negative, got %d", c.First))
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("--concurrency: must be between 1 and 1024, got %d", c.Concurrency))
	}
	return errors.Join(errs...)
}

func hostPort(u *url.URL) string {
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "4222")
	}
	return u.Host
}

func validTenant(s string) bool {
	if len(s) < 2 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// Main runs the seedagents command with args and returns its exit code: 0 after a complete run,
// 1 when the run failed, 2 for bad flags. Progress goes to stderr, the summary to stdout.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := DefaultCLIConfig()
	fs := flag.NewFlagSet("seedagents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.NATSURL, "nats-url", cfg.NATSURL, "NATS server of the platform (loopback only); the platform's services must be stopped")
	fs.StringVar(&cfg.NATSNkey, "nats-nkey", "", "nkey seed file to connect to --nats-url with (agentid dev: <data-dir>/credentials/nats/registry.nk)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory of a stopped agentid dev: open its JetStream store in this process instead of --nats-url")
	fs.StringVar(&cfg.Tenant, "tenant", cfg.Tenant, "tenant the agents are seeded in (must exist)")
	fs.IntVar(&cfg.Agents, "agents", cfg.Agents, "number of agents")
	fs.IntVar(&cfg.First, "first", 0, "index of the first agent (agents first .. first+agents-1)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "agents written at once")
	fs.StringVar(&cfg.Consumer, "consumer", cfg.Consumer, "work consumer on AGENTS whose deliveries of the seeded events are acknowledged (\"\" for none)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: seedagents [flags]\n\nWrites ACTIVE agents straight into the AGENTS stream of a stopped platform (see docs/loadtest.md).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "seedagents: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "seedagents:", err)
		return 2
	}
	if err := run(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "seedagents:", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, cfg CLIConfig, stdout, stderr io.Writer) error {
	natsURL, natsNkey := cfg.NATSURL, cfg.NATSNkey
	if cfg.DataDir != "" {
		natsNkey = "" // the store opened in this process accepts any client
		ns, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{
			StoreDir: filepath.Join(cfg.DataDir, "nats"), ServerName: "agentid-dev",
		})
		if err != nil {
			return fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		natsURL = ns.ClientURL()
	}
	natsOpts, err := natsauth.ClientOptions(natsNkey, "")
	if err != nil {
		return err
	}
	nc, err := nats.Connect(natsURL, append(natsOpts, nats.Name("seedagents"))...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store := eventstore.New(js, eventstore.WithSource(Source), eventstore.WithRegisterer(nil),
		eventstore.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	if _, version, err := store.Load(ctx, cfg.Tenant, eventstore.AggregateTenant, cfg.Tenant); err != nil {
		return fmt.Errorf("--tenant %s: %w", cfg.Tenant, err)
	} else if version == 0 {
		return fmt.Errorf("--tenant %s: the tenant does not exist (start the platform once; it creates the tenant default)", cfg.Tenant)
	}
	if cfg.Consumer != "" {
		// An interrupted earlier run may have left seeded deliveries; anything else stops the run
		// before it writes.
		if _, err := MarkHandled(ctx, js, eventstore.StreamAgents, cfg.Consumer); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "seeding %d agents (%d..%d) in tenant %s through %s, %d at once\n",
		cfg.Agents, cfg.First, cfg.First+cfg.Agents-1, cfg.Tenant, natsURL, cfg.Concurrency)
	done, err := Seed(ctx, Config{
		Store: store, Tenant: cfg.Tenant, First: cfg.First, Count: cfg.Agents, Concurrency: cfg.Concurrency,
		OnProgress: func(p Progress) {
			fmt.Fprintf(stderr, "  %d/%d agents, %s, %.0f agents/s\n", p.Done, p.Total, p.Elapsed.Round(100*time.Millisecond), p.Rate())
		},
	})
	if err != nil {
		return fmt.Errorf("after %d agents: %w", done, err)
	}
	var acked int
	if cfg.Consumer != "" {
		res, err := MarkHandled(ctx, js, eventstore.StreamAgents, cfg.Consumer)
		if err != nil {
			return fmt.Errorf("%d agents seeded, but their hand-off to consumer %s is incomplete (%d acknowledged): %w", done, cfg.Consumer, res.Acked, err)
		}
		acked = res.Acked
	}
	info, err := js.Stream(ctx, eventstore.StreamAgents)
	if err != nil {
		return err
	}
	st := info.CachedInfo().State
	fmt.Fprintf(stdout, "seeded %d agents in tenant %s; consumer %s: %d seeded events acknowledged; stream %s: %d messages, %s\n",
		done, cfg.Tenant, orNone(cfg.Consumer), acked, eventstore.StreamAgents, st.Msgs, humanBytes(st.Bytes))
	return nil
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "(none)"
	}
	return s
}

func humanBytes(n uint64) string {
	const mib = 1 << 20
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}
