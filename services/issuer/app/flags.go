package app

import (
	"cmp"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/agentid/agentid/pkg/authn"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

// Command-line flags of the issuer's settings, shared by cmd/issuer and `agentid dev`.
const (
	// ProjectionLagAllowanceFlag sets Config.ProjectionLagAllowance.
	ProjectionLagAllowanceFlag = "projection-lag-allowance"
	// DPoPNonceOptionalFlag sets Config.DPoPNonceOptional.
	DPoPNonceOptionalFlag = "dpop-nonce-optional"
	// SigningKeyPublishDelayFlag sets Config.SigningKeys.PublishDelay.
	SigningKeyPublishDelayFlag = "signing-key-publish-delay"
	// SigningKeyRetentionFlag sets Config.SigningKeys.Retention.
	SigningKeyRetentionFlag = "signing-key-retention"
	// SigningKeyRotationIntervalFlag sets Config.SigningKeys.Interval.
	SigningKeyRotationIntervalFlag = "signing-key-rotation-interval"
)

// Bounds of Config.ProjectionLagAllowance.
const (
	// DefaultProjectionLagAllowance is the allowance used when none is configured.
	DefaultProjectionLagAllowance = revocation.DefaultProjectionLagAllowance
	// MaxProjectionLagAllowance is the longest allowance accepted.
	MaxProjectionLagAllowance = revocation.MaxProjectionLagAllowance
)

// Usage texts of the flags.
const (
	// ProjectionLagAllowanceUsage is the help text of --projection-lag-allowance.
	ProjectionLagAllowanceUsage = "how long after a client.disabled or agent-state event the revocation derived from it still covers newly issued tokens, for issuer replicas whose projection lags: a `duration` above 0, at most 1m"
	// DPoPNonceOptionalUsage is the help text of --dpop-nonce-optional.
	DPoPNonceOptionalUsage = "accept DPoP proofs without a server nonce at the token endpoint (default: a nonce is required, RFC 9449 §8)"
)

// CheckProjectionLagAllowanceFlag checks a --projection-lag-allowance value: above 0 (a flag that
// would silently mean the default is refused) and at most MaxProjectionLagAllowance.
func CheckProjectionLagAllowanceFlag(d time.Duration) error {
	if d <= 0 || d > MaxProjectionLagAllowance {
		return fmt.Errorf("want a duration above 0 and at most %s, got %s", MaxProjectionLagAllowance, d)
	}
	return nil
}

// CheckSigningKeyRotation checks signing-key rotation settings against the bounds that keep every
// token verifiable (0 means the default): the publish delay at least credentials.MinPublishDelay (a
// verifier with pkg/authn's JWKS refresh has fetched a NEXT key before it signs), the retention at
// least credentials.MinRetention(allowance) (a key stays in the JWKS until the last token it signed
// has expired, whatever replica signed it late), an interval longer than the publish delay. allowance
// is the projection-lag allowance (0: the default). unsafeShort skips the two lower bounds, for tests
// that rotate within seconds (Config.UnsafeShortSigningKeyDurations). Errors name the flag.
func CheckSigningKeyRotation(r credentials.SigningKeyRotation, allowance time.Duration, unsafeShort bool) error {
	if allowance == 0 {
		allowance = DefaultProjectionLagAllowance
	}
	publish, retention := cmp.Or(r.PublishDelay, credentials.DefaultPublishDelay), cmp.Or(r.Retention, credentials.DefaultRetention)
	minRetention := credentials.MinRetention(allowance)
	switch {
	case r.PublishDelay < 0:
		return fmt.Errorf("--%s %s: want a positive duration", SigningKeyPublishDelayFlag, r.PublishDelay)
	case r.Retention < 0:
		return fmt.Errorf("--%s %s: want a positive duration", SigningKeyRetentionFlag, r.Retention)
	case r.Interval < 0:
		return fmt.Errorf("--%s %s: want 0 (on demand only) or a positive duration", SigningKeyRotationIntervalFlag, r.Interval)
	case !unsafeShort && publish < credentials.MinPublishDelay:
		return fmt.Errorf("--%s %s: want at least %s, the JWKS refresh interval of the verifiers (pkg/authn), or tokens of the new key are refused by verifiers that have not fetched it",
			SigningKeyPublishDelayFlag, publish, credentials.MinPublishDelay)
	case !unsafeShort && retention < minRetention:
		return fmt.Errorf("--%s %s: want at least %s, the longest token lifetime %s plus the verifiers' clock leeway %s and --%s %s, or tokens outlive their signing key",
			SigningKeyRetentionFlag, retention, minRetention, credentials.MaxTokenTTL, authn.DefaultLeeway, ProjectionLagAllowanceFlag, allowance)
	case r.Interval > 0 && r.Interval <= publish:
		return fmt.Errorf("--%s %s: must exceed --%s %s", SigningKeyRotationIntervalFlag, r.Interval, SigningKeyPublishDelayFlag, publish)
	}
	return nil
}

// Flags are the issuer's settings that its command line sets; Register adds them to a flag set and
// Apply copies them into a Config.
type Flags struct {
	// ProjectionLagAllowance is --projection-lag-allowance.
	ProjectionLagAllowance time.Duration
	// DPoPNonceOptional is --dpop-nonce-optional.
	DPoPNonceOptional bool
	// RateLimits are --rate-per-ip, --rate-per-client, their bursts and --telemetry-denials-per-second.
	RateLimits RateLimits
	// SigningKeys are --signing-key-publish-delay, --signing-key-retention and --signing-key-rotation-interval.
	SigningKeys credentials.SigningKeyRotation
	// JTIStore is --jti-store.
	JTIStore string
}

// JTIStoreFlag names the store of used assertion ids (Config.JTIStore).
const JTIStoreFlag = "jti-store"

// jtiStoreValue is a flag.Value that accepts only the known stores.
type jtiStoreValue string

func (v *jtiStoreValue) String() string { return string(*v) }

func (v *jtiStoreValue) Set(s string) error {
	if s != JTIStoreLog && s != JTIStoreBucketAndLog {
		return fmt.Errorf("want %s or %s, got %s", JTIStoreLog, JTIStoreBucketAndLog, strconv.Quote(s))
	}
	*v = jtiStoreValue(s)
	return nil
}

// DefaultFlags returns the flags' defaults.
func DefaultFlags() Flags {
	return Flags{ProjectionLagAllowance: DefaultProjectionLagAllowance, RateLimits: DefaultRateLimits(), JTIStore: JTIStoreLog}
}

// Register adds the flags to fs; a bad --projection-lag-allowance fails the parse, naming the flag.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.Var((*lagAllowanceValue)(&f.ProjectionLagAllowance), ProjectionLagAllowanceFlag, ProjectionLagAllowanceUsage)
	fs.BoolVar(&f.DPoPNonceOptional, DPoPNonceOptionalFlag, f.DPoPNonceOptional, DPoPNonceOptionalUsage)
	f.RateLimits.Register(fs)
	fs.DurationVar(&f.SigningKeys.PublishDelay, SigningKeyPublishDelayFlag, credentials.DefaultPublishDelay,
		"how long a rotated signing key is in the JWKS before it signs: at least the JWKS cache lifetime of every verifier (pkg/authn's refresh, 5m)")
	fs.DurationVar(&f.SigningKeys.Retention, SigningKeyRetentionFlag, credentials.DefaultRetention,
		"how long a signing key stays in the JWKS after it stopped signing: at least the longest token lifetime (24h) plus clock leeway (30s) and --projection-lag-allowance")
	fs.DurationVar(&f.SigningKeys.Interval, SigningKeyRotationIntervalFlag, 0,
		"rotate each tenant's signing key once it has signed this long, e.g. 720h (0: only on demand, agentctl keys rotate)")
	fs.Var((*jtiStoreValue)(&f.JTIStore), JTIStoreFlag,
		"where used assertion ids are recorded: log (batched appends to the ISSUER_JTI stream), or bucket+log while issuer replicas of a release that used the issuer-jti bucket alone still run (docs/deploy.md, Upgrading the issuer's replay store)")
}

// Apply sets the flags' settings in cfg.
func (f Flags) Apply(cfg *Config) {
	cfg.ProjectionLagAllowance = f.ProjectionLagAllowance
	cfg.DPoPNonceOptional = f.DPoPNonceOptional
	cfg.RateLimits = f.RateLimits
	cfg.SigningKeys = f.SigningKeys
	cfg.JTIStore = f.JTIStore
}

// lagAllowanceValue is a flag.Value that accepts only valid allowances.
type lagAllowanceValue time.Duration

func (v *lagAllowanceValue) String() string { return time.Duration(*v).String() }

func (v *lagAllowanceValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (e.g. 5s): %s", strconv.Quote(s))
	}
	if err := CheckProjectionLagAllowanceFlag(d); err != nil {
		return err
	}
	*v = lagAllowanceValue(d)
	return nil
}
