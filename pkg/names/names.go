// Package names holds the platform's identifiers that more than one party computes: agent ids
// (fresh and derived from a registration's request id) and resource names. The registry assigns agent
// ids; agentctl derives the id a registration will get so it can write the agent's credential file
// before it asks, and a retry after a lost answer finds the same agent and the same key.
package names

import (
	"crypto/sha256"
	"encoding/binary"
	"regexp"

	"github.com/google/uuid"
)

// AgentIDPrefix starts every agent id.
const AgentIDPrefix = "agt_"

// crockford is the lowercase Crockford base32 alphabet (no i, l, o, u), as ULIDs use it.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

var agentIDRE = regexp.MustCompile(`^agt_[0-9a-hjkmnp-tv-z]{26}$`)

// encode128 renders 16 bytes as 26 lowercase Crockford base32 characters, like a ULID.
func encode128(b [16]byte) string {
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	out := make([]byte, 26)
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out)
}

// NewAgentID returns a fresh agent id: "agt_" and a UUIDv7 in lowercase Crockford base32, so ids sort
// roughly by creation time. It is a valid NATS subject token and OAuth client_id.
func NewAgentID() string {
	return AgentIDPrefix + encode128(uuid.Must(uuid.NewV7()))
}

// DeriveAgentID returns the agent id that a registration with requestID in tenant always gets, so
// that a retry after a lost response finds the agent it created instead of creating a second one.
func DeriveAgentID(tenant, requestID string) string {
	sum := sha256.Sum256([]byte("agentid/registry/agent\x00" + tenant + "\x00" + requestID))
	var b [16]byte
	copy(b[:], sum[:16])
	return AgentIDPrefix + encode128(b)
}

// ValidAgentID reports whether id has the form of an agent id.
func ValidAgentID(id string) bool { return agentIDRE.MatchString(id) }
