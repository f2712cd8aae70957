package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
)

// Limits the registry enforces that a manifest is checked against offline.
const (
	// MaxLifetime is how far ahead an agent's expiry may lie.
	MaxLifetime = 365 * 24 * time.Hour
	// maxJWKSKeys is how many keys an agent's JWK Set may hold.
	maxJWKSKeys = 5
	// maxJWKSFile bounds a JWK Set file.
	maxJWKSFile = 64 << 10
)

// broadGrants are scope segments the registry refuses: administrative or catch-all grants.
var broadGrants = map[string]bool{"admin": true, "superuser": true, "root": true, "*": true, "all": true}

// semantic checks the rules that need more than a pattern, on the fields read without a problem.
func (r *reader) semantic(opts Options) {
	m := r.m
	for i, s := range m.Spec.Scopes {
		if r.reportedUnder(fmt.Sprintf("spec.scopes[%d]", i)) {
			continue
		}
		for _, seg := range strings.Split(s, ".") {
			if broadGrants[seg] {
				p := fmt.Sprintf("spec.scopes[%d]", i)
				r.fail(m.LineOf(p), p, fmt.Sprintf("scope %q is an administrative or catch-all grant (%q); agents get narrow scopes only", s, seg))
				break
			}
		}
	}
	if m.Spec.Expires != "" && !r.reportedUnder("spec.expires") {
		if err := checkExpires(m.Spec.Expires, opts.Now()); err != nil {
			r.fail(m.LineOf("spec.expires"), "spec.expires", err.Error())
		}
	}
	if !r.reportedUnder("spec.publicKeys") {
		r.publicKeys()
	}
}

// checkExpires checks an expiry: an RFC 3339 time in the future and at most MaxLifetime ahead, or a
// TTL of at most MaxLifetime.
func checkExpires(v string, now time.Time) error {
	if ttl, ok, err := ParseTTL(v); ok {
		if err != nil {
			return err
		}
		if ttl > MaxLifetime {
			return fmt.Errorf("TTL %s is longer than one year", v)
		}
		return nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return fmt.Errorf("%q is not an RFC 3339 time: %s", v, strings.TrimPrefix(err.Error(), "parsing time "))
	}
	if !t.After(now) {
		return fmt.Errorf("%s is in the past", v)
	}
	if t.After(now.Add(MaxLifetime)) {
		return fmt.Errorf("%s is more than one year ahead", v)
	}
	return nil
}

// ParseTTL reads a TTL (`90d`, `720h`, `30m`); ok is false when v is not written as a TTL.
func ParseTTL(v string) (ttl time.Duration, ok bool, err error) {
	if len(v) < 2 {
		return 0, false, nil
	}
	unit := map[byte]time.Duration{'d': 24 * time.Hour, 'h': time.Hour, 'm': time.Minute}[v[len(v)-1]]
	if unit == 0 {
		return 0, false, nil
	}
	n, perr := strconv.ParseUint(v[:len(v)-1], 10, 32)
	if perr != nil {
		return 0, false, nil
	}
	if n == 0 {
		return 0, true, errors.New("a TTL must be positive")
	}
	return time.Duration(n) * unit, true, nil
}

// publicKeys reads the agent's JWK Set (inline or from its file) and checks it holds 1 to 5 public
// keys of a supported algorithm and no private key material.
func (r *reader) publicKeys() {
	m := r.m
	pk := m.Spec.PublicKeys
	var (
		raw  []byte
		path string
	)
	switch {
	case pk.JWKS != nil:
		path = "spec.publicKeys.jwks"
		b, err := json.Marshal(pk.JWKS)
		if err != nil {
			r.fail(m.LineOf(path), path, "is not a JSON-compatible JWK Set: "+err.Error())
			return
		}
		raw = b
	case pk.JWKSFile != "":
		path = "spec.publicKeys.jwksFile"
		file := pk.JWKSFile
		if !filepath.IsAbs(file) {
			file = filepath.Join(m.Dir, file)
		}
		info, err := os.Stat(file)
		switch {
		case err != nil:
			r.fail(m.LineOf(path), path, fmt.Sprintf("cannot read %s: %v", file, errors.Unwrap(err)))
			return
		case info.Size() > maxJWKSFile:
			r.fail(m.LineOf(path), path, fmt.Sprintf("%s is larger than %d bytes", file, maxJWKSFile))
			return
		}
		if raw, err = os.ReadFile(file); err != nil {
			r.fail(m.LineOf(path), path, fmt.Sprintf("cannot read %s: %v", file, err))
			return
		}
	default:
		return // reported as a structural problem
	}
	if _, err := authn.ParsePublicJWKS(string(raw), maxJWKSKeys); err != nil {
		r.fail(m.LineOf(path), path, err.Error())
		return
	}
	m.JWKS = compactJSON(raw)
}

// compactJSON is raw without insignificant white space (raw is valid JSON).
func compactJSON(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

// duplicates reports every manifest whose tenant and name another manifest already has.
func duplicates(ms []*Manifest, defaultTenant string) Problems {
	var probs Problems
	first := map[string]*Manifest{}
	for _, m := range ms {
		if m.Metadata.Name == "" {
			continue
		}
		key := m.TenantOr(defaultTenant) + "/" + m.Metadata.Name
		if f, ok := first[key]; ok {
			probs = append(probs, Problem{File: m.File, Line: m.LineOf("metadata.name"), Path: "metadata.name",
				Rule: fmt.Sprintf("%q is also defined at %s:%d; names are unique within a tenant", m.Metadata.Name, f.File, f.LineOf("metadata.name"))})
			continue
		}
		first[key] = m
	}
	return probs
}

// TenantOr returns the manifest's tenant, or def when it names none.
func (m *Manifest) TenantOr(def string) string {
	if m.Metadata.Tenant != "" {
		return m.Metadata.Tenant
	}
	return def
}
