package app

import (
	"flag"
	"fmt"

	"github.com/agentid/agentid/pkg/ratelimit"
)

// Flags of the issuer's abuse limits (RateLimits).
const (
	// RatePerIPFlag sets RateLimits.PerIP.
	RatePerIPFlag = "rate-per-ip"
	// RatePerIPBurstFlag sets RateLimits.PerIPBurst.
	RatePerIPBurstFlag = "rate-per-ip-burst"
	// RatePerClientFlag sets RateLimits.PerClient.
	RatePerClientFlag = "rate-per-client"
	// RatePerClientBurstFlag sets RateLimits.PerClientBurst.
	RatePerClientBurstFlag = "rate-per-client-burst"
	// TelemetryDenialsPerSecondFlag sets RateLimits.DenialsPerSecond.
	TelemetryDenialsPerSecondFlag = "telemetry-denials-per-second"
)

// Usage texts of the limit flags.
const (
	// RatePerIPUsage is the help text of --rate-per-ip.
	RatePerIPUsage = "token, introspection and revocation requests per second of one source address (IPv6: its /64), checked before the body is read; over it: 429 slow_down with Retry-After (0: no limit)"
	// RatePerIPBurstUsage is the help text of --rate-per-ip-burst.
	RatePerIPBurstUsage = "requests one source address may make at once (0: the rate)"
	// RatePerClientUsage is the help text of --rate-per-client.
	RatePerClientUsage = "client authentications per second of one client_id: before the assertion's signature is verified per client_id and source address, after it per client_id; over it: 429 slow_down with Retry-After (0: no limit)"
	// RatePerClientBurstUsage is the help text of --rate-per-client-burst.
	RatePerClientBurstUsage = "client authentications one client_id (and, before the signature, one client_id from one source address) may make at once (0: the rate)"
	// TelemetryDenialsPerSecondUsage is the help text of --telemetry-denials-per-second.
	TelemetryDenialsPerSecondUsage = "denied token requests of a tenant stored as telemetry records per second; the others are counted only (issuer_token_denials_not_stored_total; negative: none stored)"
)

// Limits of the issuer binary (DefaultRateLimits); a zero RateLimits (agentid dev, tests) limits nothing.
const (
	// DefaultRatePerIP is the default of --rate-per-ip.
	DefaultRatePerIP = 200
	// DefaultRatePerIPBurst is the default of --rate-per-ip-burst.
	DefaultRatePerIPBurst = 400
	// DefaultRatePerClient is the default of --rate-per-client.
	DefaultRatePerClient = 50
	// DefaultRatePerClientBurst is the default of --rate-per-client-burst.
	DefaultRatePerClientBurst = 100
)

// RateLimits are the abuse limits of the OAuth endpoints. Zero rates disable a limit.
type RateLimits struct {
	// PerIP is the requests per second of one source address at the token, introspection and
	// revocation endpoints, checked before the body is read.
	PerIP float64
	// PerIPBurst is how many requests a source address may make at once; 0: the rate.
	PerIPBurst int
	// PerClient is the client authentications per second of one client id: charged to the client id
	// and source address after parsing and before the assertion's signature is verified, and to the
	// client id alone once the signature is verified (forged assertions spend only their sender's
	// budget).
	PerClient float64
	// PerClientBurst is how many authentications a client id may make at once; 0: the rate.
	PerClientBurst int
	// DenialsPerSecond is how many denied token requests of a tenant are stored as telemetry
	// records per second (the rest are counted); 0: the telemetry default, negative: none.
	DenialsPerSecond float64
}

// DefaultRateLimits are the limits of the issuer binary.
func DefaultRateLimits() RateLimits {
	return RateLimits{PerIP: DefaultRatePerIP, PerIPBurst: DefaultRatePerIPBurst,
		PerClient: DefaultRatePerClient, PerClientBurst: DefaultRatePerClientBurst}
}

// Register adds the limit flags to fs, with the current values as defaults.
func (l *RateLimits) Register(fs *flag.FlagSet) {
	fs.Float64Var(&l.PerIP, RatePerIPFlag, l.PerIP, RatePerIPUsage)
	fs.IntVar(&l.PerIPBurst, RatePerIPBurstFlag, l.PerIPBurst, RatePerIPBurstUsage)
	fs.Float64Var(&l.PerClient, RatePerClientFlag, l.PerClient, RatePerClientUsage)
	fs.IntVar(&l.PerClientBurst, RatePerClientBurstFlag, l.PerClientBurst, RatePerClientBurstUsage)
	fs.Float64Var(&l.DenialsPerSecond, TelemetryDenialsPerSecondFlag, l.DenialsPerSecond, TelemetryDenialsPerSecondUsage)
}

// limiters builds the per-address, per-client and per-client-and-address (attempts) limiters (nil
// when off); errors name the flag. Attempts have buckets of their own, so that a flood of keys from
// forged assertions evicts no verified client's bucket.
func (l RateLimits) limiters() (perIP, perClient, attempts *ratelimit.Limiter, err error) {
	if perIP, err = ratelimit.New(ratelimit.Config{Rate: l.PerIP, Burst: l.PerIPBurst}); err != nil {
		return nil, nil, nil, fmt.Errorf("--%s %v / --%s %d: %w", RatePerIPFlag, l.PerIP, RatePerIPBurstFlag, l.PerIPBurst, err)
	}
	clientCfg := ratelimit.Config{Rate: l.PerClient, Burst: l.PerClientBurst}
	if perClient, err = ratelimit.New(clientCfg); err != nil {
		return nil, nil, nil, fmt.Errorf("--%s %v / --%s %d: %w", RatePerClientFlag, l.PerClient, RatePerClientBurstFlag, l.PerClientBurst, err)
	}
	attempts, _ = ratelimit.New(clientCfg) // the same configuration was just accepted
	return perIP, perClient, attempts, nil
}
