package dev

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	issuerapp "github.com/agentid/agentid/services/issuer/app"
)

// Flags of the issuer's key-encryption keys and signing-key rotation that `agentid dev` passes
// through; the rotation flags are the issuer's own definitions (cmd/issuer), with the same names.
const (
	// KEKIDFlag names the id of <data-dir>/kek.key, the key-encryption key that seals.
	KEKIDFlag = "kek-id"
	// OldKEKFileFlag adds an earlier key-encryption key that only opens ([KEK_ID=]FILE, repeatable).
	OldKEKFileFlag = "old-kek-file"
	// SigningKeyPublishDelayFlag is how long a rotated signing key is published before it signs.
	SigningKeyPublishDelayFlag = "signing-key-publish-delay"
	// SigningKeyRetentionFlag is how long a signing key stays in the JWKS after it stopped signing.
	SigningKeyRetentionFlag = "signing-key-retention"
	// SigningKeyRotationIntervalFlag rotates each tenant's signing key on a schedule (0: on demand only).
	SigningKeyRotationIntervalFlag = "signing-key-rotation-interval"
	// SigningKeyCheckIntervalFlag (hidden) is how often the issuer applies due key transitions.
	SigningKeyCheckIntervalFlag = "signing-key-check-interval"
	// SigningKeyUnsafeShortDurationsFlag (hidden, tests only) accepts a publish delay and retention
	// below their safe minimums, so that a rotation completes within seconds.
	SigningKeyUnsafeShortDurationsFlag = "signing-key-unsafe-short-durations"
	// DefaultKEKID is the id of <data-dir>/kek.key when --kek-id is not given.
	DefaultKEKID = "dev-" + kekFile
)

// SigningKeyFlags are the issuer's key-encryption key and signing-key rotation settings of
// `agentid dev`.
type SigningKeyFlags struct {
	// KEKID is --kek-id: the id of <data-dir>/kek.key, recorded in the events of the keys it seals.
	KEKID string
	// OldKEKFiles are the --old-kek-file values, [KEK_ID=]FILE: earlier key-encryption keys that
	// only open signing keys sealed with them (until `agentctl keys reseal --all` leaves none).
	OldKEKFiles []string
	// Issuer holds --signing-key-publish-delay, --signing-key-retention and
	// --signing-key-rotation-interval in Issuer.SigningKeys (only those fields are used).
	Issuer issuerapp.Flags
	// CheckInterval is how often the issuer applies the transitions that are due (hidden flag, for
	// tests that rotate within seconds).
	CheckInterval time.Duration
	// UnsafeShortDurations is --signing-key-unsafe-short-durations (hidden, tests only): the publish
	// delay and retention may be below their safe minimums (issuer Config.UnsafeShortSigningKeyDurations).
	UnsafeShortDurations bool
}

// signingKeyFlagNames are the issuer's flags that dev registers from the issuer's definitions.
var signingKeyFlagNames = []string{SigningKeyPublishDelayFlag, SigningKeyRetentionFlag, SigningKeyRotationIntervalFlag}

// DefaultSigningKeyFlags returns the issuer's defaults (publish delay 10m, retention 24h1m, no
// scheduled rotation) and the KEK id dev has always used.
func DefaultSigningKeyFlags() SigningKeyFlags {
	f := SigningKeyFlags{KEKID: DefaultKEKID, Issuer: issuerapp.DefaultFlags(), CheckInterval: issuerapp.DefaultSigningKeyCheckInterval}
	f.Issuer.Register(flag.NewFlagSet("issuer", flag.ContinueOnError)) // sets the issuer's defaults
	return f
}

// Register adds the flags to fs, bound to f.
func (f *SigningKeyFlags) Register(fs *pflag.FlagSet) {
	issuer := flag.NewFlagSet("issuer", flag.ContinueOnError)
	f.Issuer.Register(issuer)
	for _, name := range signingKeyFlagNames {
		if gf := issuer.Lookup(name); gf != nil {
			fs.AddGoFlag(gf)
		}
	}
	fs.StringVar(&f.KEKID, KEKIDFlag, f.KEKID, "id of <data-dir>/kek.key, the key-encryption key that seals signing keys (recorded in their events; after a KEK change give the new key a new id)")
	fs.StringArrayVar(&f.OldKEKFiles, OldKEKFileFlag, nil, "[KEK_ID=]FILE: an earlier key-encryption key that only opens signing keys sealed with it, until `agentctl keys reseal --all` reports none left under it (repeatable; KEK_ID defaults to the id derived from the key; docs/rotation.md)")
	fs.DurationVar(&f.CheckInterval, SigningKeyCheckIntervalFlag, f.CheckInterval, "how often the issuer applies due signing-key transitions")
	_ = fs.MarkHidden(SigningKeyCheckIntervalFlag)
	fs.BoolVar(&f.UnsafeShortDurations, SigningKeyUnsafeShortDurationsFlag, false,
		"tests only: accept a signing-key publish delay and retention below their safe minimums (tokens may outlive their key)")
	_ = fs.MarkHidden(SigningKeyUnsafeShortDurationsFlag)
}

// issuerKeys are the checked settings that go into the issuer's Config.
type issuerKeys struct {
	kekID       string
	old         []issuerapp.OldKEK
	flags       issuerapp.Flags
	check       time.Duration
	unsafeShort bool
}

// load checks the flags, the publish delay and retention against the issuer's safe minimums with
// the projection-lag allowance allowance (issuerapp.CheckSigningKeyRotation), and reads the old KEK
// files; errors name the flag. It creates nothing.
func (f SigningKeyFlags) load(allowance time.Duration) (issuerKeys, error) {
	rot := f.Issuer.SigningKeys
	switch {
	case f.KEKID == "" || strings.ContainsAny(f.KEKID, "\r\n="):
		return issuerKeys{}, fmt.Errorf("--%s %q: want a non-empty id without line breaks or '='", KEKIDFlag, f.KEKID)
	case rot.PublishDelay <= 0:
		return issuerKeys{}, fmt.Errorf("--%s %s: want a positive duration", SigningKeyPublishDelayFlag, rot.PublishDelay)
	case rot.Retention <= 0:
		return issuerKeys{}, fmt.Errorf("--%s %s: want a positive duration", SigningKeyRetentionFlag, rot.Retention)
	case f.CheckInterval <= 0:
		return issuerKeys{}, fmt.Errorf("--%s %s: want a positive duration", SigningKeyCheckIntervalFlag, f.CheckInterval)
	}
	if err := issuerapp.CheckSigningKeyRotation(rot, allowance, f.UnsafeShortDurations); err != nil {
		return issuerKeys{}, err
	}
	out := issuerKeys{kekID: f.KEKID, flags: f.Issuer, check: f.CheckInterval, unsafeShort: f.UnsafeShortDurations}
	seen := map[string]string{f.KEKID: "--" + KEKIDFlag}
	for _, v := range f.OldKEKFiles {
		id, path, ok := strings.Cut(v, "=")
		if !ok {
			id, path = "", v
		}
		if path == "" {
			return issuerKeys{}, fmt.Errorf("--%s %q: want [KEK_ID=]FILE", OldKEKFileFlag, v)
		}
		key, err := issuerapp.LoadKEKFile(path)
		if err != nil {
			return issuerKeys{}, fmt.Errorf("--%s %s: %w", OldKEKFileFlag, path, err)
		}
		if id == "" {
			id = issuerapp.DefaultKEKID(key)
		}
		if prev, dup := seen[id]; dup {
			return issuerKeys{}, fmt.Errorf("--%s %s: key-encryption key id %q is also given by %s: each KEK needs its own id", OldKEKFileFlag, v, id, prev)
		}
		seen[id] = "--" + OldKEKFileFlag + " " + v
		out.old = append(out.old, issuerapp.OldKEK{ID: id, Key: key})
	}
	return out, nil
}

// apply sets the settings in the issuer's configuration.
func (k issuerKeys) apply(cfg *issuerapp.Config) {
	cfg.KEKID, cfg.OldKEKs, cfg.SigningKeyCheckInterval = k.kekID, k.old, k.check
	cfg.SigningKeys, cfg.UnsafeShortSigningKeyDurations = k.flags.SigningKeys, k.unsafeShort
}
