// Package tokenload is the load generator for the OAuth token endpoint: it provisions agents through
// the registry API, sends client-credentials + private_key_jwt token requests from them for a bounded
// time or count, and reports throughput, latency percentiles, errors by OAuth error code, the
// provisioning latency and the memory of given processes.
package tokenload

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/tlsx"
)

// Bounds of the settings: every run stops by itself.
const (
	// MaxAgents bounds --agents.
	MaxAgents = 1000
	// MaxConcurrency bounds --concurrency.
	MaxConcurrency = 1024
	// MaxDuration bounds --duration and --provision-timeout.
	MaxDuration = time.Hour
	// MaxRequests bounds --requests, and the requests of a run without --requests.
	MaxRequests = 10_000_000
	// MaxRate bounds --rate (requests/s).
	MaxRate = 100_000
	// MaxRegisterParallelism bounds --register-parallelism.
	MaxRegisterParallelism = 64
	// DefaultDuration is how long a run lasts when neither --duration nor --requests is given.
	DefaultDuration = 20 * time.Second
	// RequestsTimeCap bounds a --requests run when no --duration is given.
	RequestsTimeCap = 10 * time.Minute
	// MaxPresignDuration bounds a --presign run: pre-signed assertions expire
	// authn.AssertionLifetime (60s) after signing, minus the issuer's leeway and signing time.
	MaxPresignDuration = 45 * time.Second
)

// Config is one run of the generator.
type Config struct {
	// DataDir is the `agentid dev` data directory holding credentials/bootstrap-admin.json.
	DataDir string
	// Server is the gRPC address of the platform (loopback only).
	Server string
	// CAFile, when set, is the PEM CA bundle the platform's certificate is verified against: gRPC
	// and token requests then use TLS. Empty means plaintext, as `agentid dev` without --tls-cert.
	CAFile string
	// Tenant is the tenant the agents are registered in and get tokens from.
	Tenant string
	// Agents is the number of agents provisioned and used round-robin.
	Agents int
	// RegisterParallelism is how many agents are provisioned at once.
	RegisterParallelism int
	// ProvisionTimeout bounds the provisioning of one agent.
	ProvisionTimeout time.Duration
	// Concurrency is the number of workers sending token requests.
	Concurrency int
	// Duration bounds the run in time.
	Duration time.Duration
	// Requests, when not 0, is the exact number of token requests to send.
	Requests int
	// Rate, when not 0, makes the run open-loop: requests start at this rate per second whether or not
	// earlier ones have finished; latency is then measured from each request's scheduled start.
	Rate float64
	// Presign signs all Requests assertions before the request phase, so the generator's signing
	// does not compete with the server for the CPUs while measuring.
	Presign bool
	// Output is the report format: text or json.
	Output string
	// PIDs are processes whose memory (VmRSS, VmHWM) is sampled before and after the run.
	PIDs []int
}

// DefaultConfig returns the defaults of the flags.
func DefaultConfig() Config {
	return Config{
		DataDir:             ".agentid",
		Server:              "127.0.0.1:7070",
		Tenant:              "default",
		Agents:              20,
		RegisterParallelism: 4,
		ProvisionTimeout:    2 * time.Minute,
		Concurrency:         4,
		Duration:            DefaultDuration,
		Output:              "text",
	}
}

// Validate checks every setting; an error names the flag at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		dashes := "--"
		if len(flag) == 1 {
			dashes = "-"
		}
		errs = append(errs, fmt.Errorf("%s%s: %s", dashes, flag, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data-dir", "required (the agentid dev data directory)")
	}
	if err := CheckLoopbackAddr(c.Server); err != nil {
		bad("server", "%v", err)
	}
	if _, err := c.ClientTLS(); err != nil {
		errs = append(errs, err)
	}
	if !validTenant(c.Tenant) {
		bad("tenant", "%q is not a tenant id (lowercase letters, digits and dashes, 2 to 63 characters)", c.Tenant)
	}
	if c.Agents < 1 || c.Agents > MaxAgents {
		bad("agents", "must be between 1 and %d, got %d", MaxAgents, c.Agents)
	}
	if c.RegisterParallelism < 1 || c.RegisterParallelism > MaxRegisterParallelism {
		bad("register-parallelism", "must be between 1 and %d, got %d", MaxRegisterParallelism, c.RegisterParallelism)
	}
	if c.ProvisionTimeout <= 0 || c.ProvisionTimeout > MaxDuration {
		bad("provision-timeout", "must be more than 0 and at most %v, got %v", MaxDuration, c.ProvisionTimeout)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		bad("concurrency", "must be between 1 and %d, got %d", MaxConcurrency, c.Concurrency)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		bad("duration", "must be more than 0 and at most %v, got %v", MaxDuration, c.Duration)
	}
	if c.Requests < 0 || c.Requests > MaxRequests {
		bad("requests", "must be between 0 (no count limit) and %d, got %d", MaxRequests, c.Requests)
	}
	if c.Rate < 0 || c.Rate > MaxRate {
		bad("rate", "must be between 0 (closed loop) and %d requests/s, got %g", MaxRate, c.Rate)
	}
	if c.Presign && c.Requests == 0 {
		bad("presign", "needs --requests (how many assertions to sign beforehand)")
	}
	if c.Presign && c.Duration > MaxPresignDuration {
		bad("presign", "pre-signed assertions expire: --duration must be at most %v, got %v", MaxPresignDuration, c.Duration)
	}
	if c.Output != "text" && c.Output != "json" {
		bad("o", "want text or json, got %q", c.Output)
	}
	for _, p := range c.PIDs {
		if p <= 0 {
			bad("pid", "must be a process id, got %d", p)
		}
	}
	return errors.Join(errs...)
}

// ClientTLS returns the TLS configuration of the connections to the platform (tlsx.NewClientConfig
// verifying --ca), or nil without --ca (plaintext). A missing, unreadable or certificate-less CA file
// is an error naming --ca and the file.
func (c Config) ClientTLS() (*tls.Config, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	cfg, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: c.CAFile})
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	return cfg, nil
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

// CheckLoopbackAddr accepts host:port addresses whose host is a loopback IP or localhost.
func CheckLoopbackAddr(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hostport)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has no valid port", hostport)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost): load is only sent to this machine", hostport)
	}
	return nil
}

// CheckLoopbackURL accepts http(s) URLs whose host is a loopback IP or localhost.
func CheckLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	if !isLoopbackHost(u.Hostname()) {
		return fmt.Errorf("%q is not on a loopback address (127.0.0.0/8, ::1 or localhost): load is only sent to this machine", raw)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pidList is a repeatable --pid flag.
type pidList []int

// String lists the process ids, comma-separated (flag.Value).
func (p *pidList) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

// Set adds one or more comma-separated process ids (flag.Value).
func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("%q is not a process id", f)
		}
		*p = append(*p, n)
	}
	return nil
}

// ParseFlags parses the command line into a validated Config. Usage and errors go to stderr; -h
// returns flag.ErrHelp.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("tokenload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `tokenload — load generator for the agentid OAuth token endpoint.

It registers --agents low-risk dev agents through the registry API (as the bootstrap admin of
--data-dir), waits until each is ACTIVE and gets a token, then sends client_credentials +
private_key_jwt token requests from them with --concurrency workers for --duration or --requests.
Only loopback targets. With --ca, gRPC and token requests use TLS and verify the platform's
certificate against that CA (agentid dev --tls-cert ...); without it, plaintext.

Usage: tokenload [flags]

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "agentid dev data directory (reads credentials/bootstrap-admin.json)")
	fs.StringVar(&c.Server, "server", c.Server, "gRPC address of the platform (loopback only)")
	fs.StringVar(&c.CAFile, "ca", "", "PEM CA file to verify the platform's TLS certificate against (gRPC and HTTPS); empty: plaintext")
	fs.StringVar(&c.Tenant, "tenant", c.Tenant, "tenant to register agents in and get tokens from")
	fs.IntVar(&c.Agents, "agents", c.Agents, "agents to provision and use round-robin")
	fs.IntVar(&c.RegisterParallelism, "register-parallelism", c.RegisterParallelism, "agents provisioned at once")
	fs.DurationVar(&c.ProvisionTimeout, "provision-timeout", c.ProvisionTimeout, "bound on provisioning one agent")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "concurrent token request workers")
	fs.DurationVar(&c.Duration, "duration", c.Duration, fmt.Sprintf("how long to send requests (at most %v; with --requests and no --duration: a cap of %v)", MaxDuration, RequestsTimeCap))
	fs.IntVar(&c.Requests, "requests", 0, "send exactly this many requests (0: as many as fit in --duration)")
	fs.Float64Var(&c.Rate, "rate", 0, "open loop: start this many requests per second (0: closed loop, each worker back to back)")
	fs.BoolVar(&c.Presign, "presign", false, fmt.Sprintf("sign the --requests assertions before the request phase (at most %v long)", MaxPresignDuration))
	fs.StringVar(&c.Output, "o", c.Output, "report format: text or json")
	fs.Var((*pidList)(&c.PIDs), "pid", "process id whose memory to sample before and after (repeatable)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q: tokenload takes flags only", fs.Args())
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if c.Requests > 0 && !durationSet {
		c.Duration = RequestsTimeCap
		if c.Presign {
			c.Duration = MaxPresignDuration
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}
