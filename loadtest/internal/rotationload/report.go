package rotationload

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Report is what one run measured.
type Report struct {
	// Target is where the load went.
	Target Target `json:"target"`
	// Settings are the run's settings.
	Settings Settings `json:"settings"`
	// Requests is the number of completed token requests.
	Requests int64 `json:"requests"`
	// OK is the number of tokens issued.
	OK int64 `json:"ok"`
	// Failures is the number of failed token requests (must be 0).
	Failures int64 `json:"failures"`
	// FailureCodes counts the failed requests by error code.
	FailureCodes map[string]int64 `json:"failure_codes"`
	// Verified is the number of tokens the verifier accepted right after issuance.
	Verified int64 `json:"verified"`
	// Reverified is the number of tokens it accepted again just before their expiry or at the end.
	Reverified int64 `json:"reverified"`
	// VerificationFailures is the number of refused verifications, at issuance or later (must be 0).
	VerificationFailures int64 `json:"verification_failures"`
	// VerificationReasons counts the refusals by when, reason and kid.
	VerificationReasons map[string]int64 `json:"verification_reasons"`
	// TokensPerKid counts the issued tokens by signing key id.
	TokensPerKid map[string]int64 `json:"tokens_per_kid"`
	// OldKid is the key that was CURRENT before the rotation.
	OldKid string `json:"old_kid"`
	// NewKid is the key the rotation created.
	NewKid string `json:"new_kid"`
	// Rotation is when the rotation's steps were seen.
	Rotation Rotation `json:"rotation"`
	// JWKSAtEnd are the key ids the tenant's JWKS published at the end.
	JWKSAtEnd []string `json:"jwks_at_end"`
	// OldKidInJWKS reports whether the old key was still published at the end.
	OldKidInJWKS bool `json:"old_kid_in_jwks"`
	// NewKidInJWKS reports whether the new key was published at the end.
	NewKidInJWKS bool `json:"new_kid_in_jwks"`
	// ElapsedSeconds is the length of the load phase.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
}

// Target is where the load went.
type Target struct {
	// Server is the gRPC address.
	Server string `json:"server"`
	// Issuer is the tenant's issuer identifier.
	Issuer string `json:"issuer"`
	// Tenant is the tenant.
	Tenant string `json:"tenant"`
}

// Settings are a run's settings.
type Settings struct {
	// Clients is the number of clients.
	Clients int `json:"clients"`
	// Concurrency is the number of workers.
	Concurrency int `json:"concurrency"`
	// DurationSeconds is --duration.
	DurationSeconds float64 `json:"duration_seconds"`
	// RotateAfterSeconds is --rotate-after.
	RotateAfterSeconds float64 `json:"rotate_after_seconds"`
	// TokenTTLSeconds is --token-ttl.
	TokenTTLSeconds float64 `json:"token_ttl_seconds"`
	// JWKSRefreshSeconds is --jwks-refresh.
	JWKSRefreshSeconds float64 `json:"jwks_refresh_seconds"`
	// UntilRemoved is --until-removed.
	UntilRemoved bool `json:"until_removed"`
}

// Rotation is when the steps of the rotation were seen, in seconds since the load started (0: not
// seen), and the issuer's settings as the keys' dates show them.
type Rotation struct {
	// RotatedAtSeconds is when RotateSigningKey answered.
	RotatedAtSeconds float64 `json:"rotated_at_seconds"`
	// ActivatedAtSeconds is when the new key was first seen CURRENT.
	ActivatedAtSeconds float64 `json:"activated_at_seconds"`
	// RemovedAtSeconds is when the old key was first seen RETIRED (out of the JWKS).
	RemovedAtSeconds float64 `json:"removed_at_seconds"`
	// PublishDelaySeconds is the new key's activation time minus its creation time.
	PublishDelaySeconds float64 `json:"publish_delay_seconds"`
	// RetentionSeconds is the old key's removal time minus its retirement time.
	RetentionSeconds float64 `json:"retention_seconds"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	s, rot := r.Settings, r.Rotation
	fmt.Fprintf(&b, "target       %s (tenant %s, gRPC %s)\n", r.Target.Issuer, r.Target.Tenant, r.Target.Server)
	fmt.Fprintf(&b, "settings     %d clients, concurrency %d, rotate after %gs, token lifetime %gs, verifier JWKS refresh %gs\n",
		s.Clients, s.Concurrency, s.RotateAfterSeconds, s.TokenTTLSeconds, s.JWKSRefreshSeconds)
	fmt.Fprintf(&b, "requests     %d in %.1fs: %d issued, %d failed%s\n", r.Requests, r.ElapsedSeconds, r.OK, r.Failures, counts(r.FailureCodes))
	fmt.Fprintf(&b, "verified     %d at issuance, %d again before expiry or at the end, %d refused%s\n",
		r.Verified, r.Reverified, r.VerificationFailures, counts(r.VerificationReasons))
	fmt.Fprintf(&b, "tokens/kid  %s\n", counts(r.TokensPerKid))
	fmt.Fprintf(&b, "rotation     old %s, new %s\n", r.OldKid, r.NewKid)
	fmt.Fprintf(&b, "             rotated at %.1fs, activated at %s, old key removed at %s (publish delay %gs, retention %gs)\n",
		rot.RotatedAtSeconds, seen(rot.ActivatedAtSeconds), seen(rot.RemovedAtSeconds), rot.PublishDelaySeconds, rot.RetentionSeconds)
	fmt.Fprintf(&b, "JWKS at end  %s (old key published: %t, new key published: %t)\n", strings.Join(r.JWKSAtEnd, ", "), r.OldKidInJWKS, r.NewKidInJWKS)
	_, err := io.WriteString(w, b.String())
	return err
}

func seen(s float64) string {
	if s == 0 {
		return "(not seen)"
	}
	return fmt.Sprintf("%.1fs", s)
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	return " (" + strings.TrimSpace(b.String()) + ")"
}
