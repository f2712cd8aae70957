// Package rotationload is token load across a signing-key rotation: clients request tokens while
// the tenant's signing key is rotated through the API, and a resource-server verifier (pkg/authn
// with its JWKS cache) verifies every issued token right after issuance and again just before it
// expires (or at the end). A correct rotation has zero failed requests and zero failed
// verifications.
package rotationload

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/agentid/agentid/loadtest/internal/tokenload"
)

// Bounds of the settings: every run stops by itself.
const (
	// MaxClients bounds --clients.
	MaxClients = 256
	// MaxConcurrency bounds --concurrency.
	MaxConcurrency = 256
	// MaxDuration bounds --duration.
	MaxDuration = time.Hour
	// MaxTokenTTL bounds --token-ttl (the issuer's longest token lifetime).
	MaxTokenTTL = 24 * time.Hour
	// ReverifyMargin is how long before a token's expiry it is verified the second time.
	ReverifyMargin = time.Second
)

// Config is one run.
type Config struct {
	// DataDir is the `agentid dev` data directory holding credentials/bootstrap-admin.json.
	DataDir string
	// Server is the gRPC address of the platform (loopback only).
	Server string
	// Tenant is the tenant whose signing key is rotated and whose tokens are requested.
	Tenant string
	// Clients is the number of OAuth clients created for the run and used round-robin.
	Clients int
	// Concurrency is the number of workers requesting tokens back to back.
	Concurrency int
	// Duration bounds the run; with UntilRemoved it is the longest wait for the old key's removal.
	Duration time.Duration
	// RotateAfter is when, after the load started, RotateSigningKey is called.
	RotateAfter time.Duration
	// TokenTTL is the token lifetime of the clients; it must not exceed the issuer's
	// --signing-key-retention, or tokens of the old key outlive its presence in the JWKS.
	TokenTTL time.Duration
	// Resource is the RFC 8707 resource the clients' tokens are for (the verifier's audience).
	Resource string
	// JWKSRefresh is the verifier's JWKS cache lifetime (RefreshInterval, and MinRefreshInterval
	// when shorter than pkg/authn's 5s); the issuer's --signing-key-publish-delay must be at least it.
	JWKSRefresh time.Duration
	// UntilRemoved ends the run once the old key has been removed (RETIRED), instead of at Duration;
	// a run that reaches Duration first fails.
	UntilRemoved bool
	// Output is the report format: text or json.
	Output string
}

// DefaultConfig returns the defaults of the flags.
func DefaultConfig() Config {
	return Config{
		DataDir:     ".agentid",
		Server:      "127.0.0.1:7070",
		Tenant:      "default",
		Clients:     8,
		Concurrency: 8,
		Duration:    90 * time.Second,
		RotateAfter: 5 * time.Second,
		TokenTTL:    30 * time.Second,
		Resource:    "https://files.example",
		JWKSRefresh: 5 * time.Second,
		Output:      "text",
	}
}

// Validate checks every setting; an error names the flag at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("data-dir", "required (the agentid dev data directory)")
	}
	if err := tokenload.CheckLoopbackAddr(c.Server); err != nil {
		bad("server", "%v", err)
	}
	if c.Tenant == "" {
		bad("tenant", "required")
	}
	if c.Clients < 1 || c.Clients > MaxClients {
		bad("clients", "must be between 1 and %d, got %d", MaxClients, c.Clients)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		bad("concurrency", "must be between 1 and %d, got %d", MaxConcurrency, c.Concurrency)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		bad("duration", "must be more than 0 and at most %v, got %v", MaxDuration, c.Duration)
	}
	if c.RotateAfter < 0 || c.RotateAfter >= c.Duration {
		bad("rotate-after", "must be at least 0 and less than --duration %v, got %v", c.Duration, c.RotateAfter)
	}
	if c.TokenTTL < 2*ReverifyMargin || c.TokenTTL > MaxTokenTTL || c.TokenTTL%time.Second != 0 {
		bad("token-ttl", "must be whole seconds between %v and %v, got %v", 2*ReverifyMargin, MaxTokenTTL, c.TokenTTL)
	}
	if c.Resource == "" {
		bad("resource", "required (an RFC 8707 resource URI)")
	}
	if c.JWKSRefresh <= 0 {
		bad("jwks-refresh", "must be a positive duration, got %v", c.JWKSRefresh)
	}
	if c.Output != "text" && c.Output != "json" {
		bad("o", "want text or json, got %q", c.Output)
	}
	return errors.Join(errs...)
}

// ParseFlags parses the command line into a validated Config. Usage and errors go to stderr; -h
// returns flag.ErrHelp.
func ParseFlags(args []string, stderr io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("rotationload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `rotationload — token load across a signing-key rotation of a running agentid dev.

It creates --clients OAuth clients in --tenant (as the bootstrap admin of --data-dir), requests
tokens from them with --concurrency workers, calls RotateSigningKey --rotate-after the load started,
and verifies every issued token with pkg/authn's JWKS verifier right after issuance and again just
before it expires (or at the end). Start agentid dev with a --signing-key-publish-delay of at least
--jwks-refresh and a --signing-key-retention of at least --token-ttl so that the activation and the
removal of the old key both happen within the run. Only loopback targets, plaintext.

Usage: rotationload [flags]

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "agentid dev data directory (reads credentials/bootstrap-admin.json)")
	fs.StringVar(&c.Server, "server", c.Server, "gRPC address of the platform (loopback only)")
	fs.StringVar(&c.Tenant, "tenant", c.Tenant, "tenant whose signing key is rotated")
	fs.IntVar(&c.Clients, "clients", c.Clients, "OAuth clients created for the run, used round-robin")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "concurrent token request workers")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to send requests (with --until-removed: the longest wait for the old key's removal)")
	fs.DurationVar(&c.RotateAfter, "rotate-after", c.RotateAfter, "when to rotate, after the load started")
	fs.DurationVar(&c.TokenTTL, "token-ttl", c.TokenTTL, "token lifetime of the clients (whole seconds; at most the issuer's --signing-key-retention)")
	fs.StringVar(&c.Resource, "resource", c.Resource, "resource the tokens are for (the verifier's audience)")
	fs.DurationVar(&c.JWKSRefresh, "jwks-refresh", c.JWKSRefresh, "JWKS cache lifetime of the verifier (at most the issuer's --signing-key-publish-delay)")
	fs.BoolVar(&c.UntilRemoved, "until-removed", false, "stop once the old key has been removed; fail if --duration passes first")
	fs.StringVar(&c.Output, "o", c.Output, "report format: text or json")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q: rotationload takes flags only", fs.Args())
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}
