// Package discovery finds ghost agents: agent definitions, OAuth client configurations and static
// credentials in source trees and deployment manifests, and client ids and API keys in API-gateway
// access logs. It is shared by agentctl (code scans run on the user's machine: the code never leaves
// it) and the registry's DiscoveryService. A finding never holds a secret in full: it carries a
// redacted prefix of at most 4 characters (none for passwords, client secrets and generic
// secret-like assignments) and the SHA-256 fingerprint of the value.
package discovery

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
	"unicode/utf8"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// maxPrefix is the longest prefix of a secret a finding shows.
const maxPrefix = 4

// Fingerprint is the SHA-256 of v in lowercase hex: how a secret is compared and resolved without
// being sent or shown.
func Fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

// Redact shows at most the first 4 characters of a secret (fewer for short values: a quarter of
// its length) followed by "…".
func Redact(v string) string {
	n := min(maxPrefix, utf8.RuneCountInString(v)/4)
	i := 0
	for range n {
		_, size := utf8.DecodeRuneInString(v[i:])
		i += size
	}
	return v[:i] + "…"
}

// FindingID is the stable id of a finding: `fnd-` and 20 hex digits of the SHA-256 of its source,
// rule, value fingerprint and file. A rescan gives the same id; the same secret in two files gives
// two findings.
func FindingID(source registryv1.FindingSource, ruleID, fingerprint, file string) string {
	sum := sha256.Sum256([]byte(source.String() + "\x00" + ruleID + "\x00" + fingerprint + "\x00" + file))
	return "fnd-" + hex.EncodeToString(sum[:10])
}

// CheckID reports whether f.id is the id its content derives.
func CheckID(f *registryv1.Finding) bool {
	return f.GetId() != "" && f.GetId() == FindingID(f.GetSource(), f.GetRuleId(), f.GetFingerprint(), f.GetFile())
}

// entropy is the Shannon entropy of s in bits per character.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	var h float64
	n := float64(len(s))
	for _, c := range counts {
		if c == 0 {
			continue
		}
		p := float64(c) / n
		h -= p * math.Log2(p)
	}
	return h
}

// placeholders are substrings of values that are not real secrets.
var placeholders = []string{
	"example", "placeholder", "changeme", "change_me", "your_", "your-", "xxxx", "****", "<", ">", "${", "{{",
	"process.env", "os.environ", "getenv", "redacted", "dummy", "sample", "replace",
}

// isPlaceholder reports whether v looks like a placeholder or a reference rather than a secret.
func isPlaceholder(v string) bool {
	l := strings.ToLower(v)
	for _, p := range placeholders {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}

// charClasses counts the classes (lower, upper, digit, other) present in v.
func charClasses(v string) int {
	var lower, upper, digit, other int
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= 'a' && c <= 'z':
			lower = 1
		case c >= 'A' && c <= 'Z':
			upper = 1
		case c >= '0' && c <= '9':
			digit = 1
		default:
			other = 1
		}
	}
	return lower + upper + digit + other
}
