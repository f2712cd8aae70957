package oauth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// DefaultLeeway tolerates clock skew between clients and the issuer.
const DefaultLeeway = 30 * time.Second

// maxAccessTokenBytes bounds a token presented for introspection or as a bearer credential.
const maxAccessTokenBytes = 16 << 10

// accessTokenAlgs are the algorithms of access tokens the issuer signs.
var accessTokenAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// Credentials is the read model the authorization server works from (the credentials projection).
type Credentials interface {
	HasTenant(tenant string) bool
	CurrentKey(tenant string) (*keys.SigningKey, bool)
	SigningKey(tenant, kid string) (*keys.SigningKey, bool)
	SigningKeys(tenant string) []*keys.SigningKey
	Client(tenant, clientID string) (*credentials.Client, bool)
}

// ReplayCache records used assertion ids; Use fails with replay.ErrReplayed on reuse.
type ReplayCache interface {
	Use(ctx context.Context, tenant, clientID, jti string) error
}

// Telemetry receives one record per token request; it must not block.
type Telemetry interface {
	TokenRequested(ceSubject string, md eventstore.Metadata, msg *issuerv1.TokenRequested)
}

// ClientLimiter rate-limits client authentication by tenant and client id (pkg/ratelimit.Limiter):
// Allow reports whether one more attempt may go on, or how long until one may.
type ClientLimiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Config configures a Server.
type Config struct {
	// PublicURL is the issuer's public base URL; tenant issuers are {PublicURL}/t/{tenant}. Required.
	PublicURL string
	// Credentials is the read model. Required.
	Credentials Credentials
	// Replay records used assertion ids. Required.
	Replay ReplayCache
	// Agents tells the token endpoint whether a client's agent is ACTIVE; without it every client of
	// an agent is refused.
	Agents AgentStates
	// Telemetry, if set, receives token request records.
	Telemetry Telemetry
	// Revocations stores the revocations of the RFC 7009 endpoint; without it the endpoint answers 503.
	Revocations RevocationWriter
	// Denylist, if set, refuses revoked tokens at introspection and in VerifyAPIToken.
	Denylist Denylist
	// DPoP configures DPoP-bound tokens (RFC 9449) at the token endpoint.
	DPoP DPoPConfig
	// ClientLimiter, if set, limits the client authentications of each client id, charged only once
	// the assertion's signature is verified (so that nobody but the client spends its budget); over
	// the limit a request is answered 429 slow_down.
	ClientLimiter ClientLimiter
	// AttemptLimiter, if set, limits the client authentication attempts of each client id from one
	// source address (tenant, client id and ratelimit.SourceKey of Request.RemoteAddr), charged once
	// the assertion is parsed and before its signature is verified; over the limit a request is
	// answered 429 slow_down. A flood of forged assertions naming a client spends only the budget of
	// the address it comes from.
	AttemptLimiter ClientLimiter
	// TemporalNamespace is the Temporal namespace in the "permissions" claim of tokens for
	// authn.TemporalAudience (default DefaultTemporalNamespace).
	TemporalNamespace string
	// Leeway tolerates clock skew; default DefaultLeeway.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Server is the authorization server of every tenant. It is safe for concurrent use.
type Server struct {
	base      string
	creds     Credentials
	replay    ReplayCache
	agents    AgentStates
	telemetry Telemetry
	revoked   RevocationWriter
	denylist  Denylist
	dpop      *dpop
	limiter   ClientLimiter
	attempts  ClientLimiter
	leeway    time.Duration
	now       func() time.Time

	temporalNamespace string
	logger            *slog.Logger
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	base := strings.TrimRight(cfg.PublicURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("oauth: public URL %q must be an absolute http(s) URL without query or fragment", cfg.PublicURL)
	}
	if cfg.Credentials == nil || cfg.Replay == nil {
		return nil, errors.New("oauth: Credentials and Replay are required")
	}
	s := &Server{base: base, creds: cfg.Credentials, replay: cfg.Replay, telemetry: cfg.Telemetry,
		leeway: cfg.Leeway, now: cfg.Now, logger: cfg.Logger}
	s.agents = cfg.Agents
	if s.agents == nil {
		s.agents = noAgents{}
	}
	if s.dpop, err = newDPoP(cfg.DPoP); err != nil {
		return nil, err
	}
	s.revoked, s.denylist = cfg.Revocations, cfg.Denylist
	s.temporalNamespace = cmp.Or(cfg.TemporalNamespace, DefaultTemporalNamespace)
	if err := ValidTemporalNamespace(s.temporalNamespace); err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	s.limiter, s.attempts = cfg.ClientLimiter, cfg.AttemptLimiter
	if s.leeway <= 0 {
		s.leeway = DefaultLeeway
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s, nil
}

// Issuer is the issuer identifier of tenant.
func (s *Server) Issuer(tenant string) string { return s.base + "/t/" + tenant }

// TokenEndpoint is the token endpoint URL of tenant.
func (s *Server) TokenEndpoint(tenant string) string { return s.Issuer(tenant) + "/oauth2/token" }

// IntrospectionEndpoint is the introspection endpoint URL of tenant.
func (s *Server) IntrospectionEndpoint(tenant string) string {
	return s.Issuer(tenant) + "/oauth2/introspect"
}

// JWKSURI is the JWK Set URL of tenant.
func (s *Server) JWKSURI(tenant string) string { return s.Issuer(tenant) + "/jwks.json" }

// KnownTenant reports whether tenant has an authorization server.
func (s *Server) KnownTenant(tenant string) bool {
	return authn.ValidTenant(tenant) && s.creds.HasTenant(tenant)
}

// printable returns s if it is valid UTF-8 of at most n bytes without control characters, else a
// cleaned, truncated copy: for values echoed into telemetry.
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// headerSafe returns s if it can travel in a NATS header, else "".
func headerSafe(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		return ""
	}
	return s
}
