package registry

import (
	"encoding/base64"
	"encoding/binary"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/agentid/agentid/pkg/names"
)

// AgentIDPrefix starts every agent id.
const AgentIDPrefix = names.AgentIDPrefix

var (
	tenantIDRE = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)
	requestRE  = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)
)

// NewAgentID returns a fresh agent id (names.NewAgentID).
func NewAgentID() string { return names.NewAgentID() }

// DeriveAgentID returns the agent id that a registration with requestID in tenant always gets, so
// that a retry after a lost response finds the agent it created instead of creating a second one
// (names.DeriveAgentID: agentctl derives the same id to write the agent's key before it registers).
func DeriveAgentID(tenant, requestID string) string { return names.DeriveAgentID(tenant, requestID) }

// ValidAgentID reports whether id has the form of an agent id.
func ValidAgentID(id string) bool { return names.ValidAgentID(id) }

// ValidTenantID reports whether id is a well-formed tenant id.
func ValidTenantID(id string) bool { return tenantIDRE.MatchString(id) }

// TenantName is the resource name of a tenant: tenants/{tenant}.
func TenantName(tenant string) string { return "tenants/" + tenant }

// AgentName is the resource name of an agent: tenants/{tenant}/agents/{agent}.
func AgentName(tenant, agentID string) string { return "tenants/" + tenant + "/agents/" + agentID }

// ParseTenantName parses tenants/{tenant}; a malformed name is InvalidArgument on field.
func ParseTenantName(field, name string) (string, error) {
	tenant, ok := strings.CutPrefix(name, "tenants/")
	if !ok || !ValidTenantID(tenant) {
		return "", invalid(field, "must have the form tenants/{tenant}")
	}
	return tenant, nil
}

// ParseAgentName parses tenants/{tenant}/agents/{agent}; a malformed name is InvalidArgument on field.
func ParseAgentName(field, name string) (tenant, agentID string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) != 4 || parts[0] != "tenants" || parts[2] != "agents" || !ValidTenantID(parts[1]) || !ValidAgentID(parts[3]) {
		return "", "", invalid(field, "must have the form tenants/{tenant}/agents/{agent}")
	}
	return parts[1], parts[3], nil
}

// checkRequestID validates an optional idempotency key: up to 128 printable ASCII characters.
func checkRequestID(id string) error {
	if id != "" && !requestRE.MatchString(id) {
		return invalid("request_id", "must be 1 to 128 printable ASCII characters without spaces")
	}
	return nil
}

// commandKey is the idempotency key of one command on one aggregate. A command without a request
// id gets a fresh one, so it is never mistaken for a repeat.
func commandKey(rpc, tenant, aggregateID, requestID string) string {
	if requestID == "" {
		requestID = "gen-" + uuid.Must(uuid.NewV7()).String()
	}
	return rpc + "/" + tenant + "/" + aggregateID + "/" + requestID
}

// Paging limits of the List queries.
const (
	// DefaultPageSize is the page size when a request gives none.
	DefaultPageSize = 50
	// MaxPageSize is the largest page size; larger requests are capped.
	MaxPageSize = 1000
)

// pageSize normalises a requested page size; a negative one is InvalidArgument.
func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "must not be negative")
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(n), nil
}

// encodePageToken renders the stream sequence of the last item of a page as an opaque token.
func encodePageToken(seq uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// decodePageToken returns the sequence a token continues after (0 for the first page).
func decodePageToken(tok string) (uint64, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 8 {
		return 0, invalid("page_token", "is not a token returned by this service")
	}
	seq := binary.BigEndian.Uint64(b)
	if seq == 0 {
		return 0, invalid("page_token", "is not a token returned by this service")
	}
	return seq, nil
}
