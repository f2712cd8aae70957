package authn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/errs"
)

// DPoP (RFC 9449) protocol constants.
const (
	// DPoPHeader is the HTTP request header carrying a DPoP proof.
	DPoPHeader = "DPoP"
	// DPoPNonceHeader is the HTTP response header carrying a server-provided nonce (RFC 9449 §8, §9).
	DPoPNonceHeader = "DPoP-Nonce"
	// DPoPTokenType is the token_type of a DPoP-bound access token and its Authorization scheme.
	DPoPTokenType = "DPoP"
	// DPoPProofType is the typ header of a DPoP proof JWT.
	DPoPProofType = "dpop+jwt"
	// MaxDPoPProofBytes bounds the size of a DPoP proof.
	MaxDPoPProofBytes = 8 << 10
	// DefaultDPoPMaxAge is how old a proof's iat may be by default.
	DefaultDPoPMaxAge = 60 * time.Second
	// DefaultDPoPLeeway is how far in the future a proof's iat may be by default (clock skew).
	DefaultDPoPLeeway = 5 * time.Second
	// maxDPoPJTILen bounds the jti of a proof.
	maxDPoPJTILen = 256
	// maxDPoPNonceLen bounds the nonce of a proof.
	maxDPoPNonceLen = 512
)

// Reason codes of DPoP failures (google.rpc.ErrorInfo reasons, kind Unauthenticated).
const (
	// ReasonDPoPMissing means a DPoP proof was required but absent.
	ReasonDPoPMissing = "DPOP_MISSING"
	// ReasonDPoPInvalid means the proof is malformed, has a wrong typ or alg, an unusable or private
	// jwk, a bad signature, or lacks a required claim.
	ReasonDPoPInvalid = "DPOP_INVALID"
	// ReasonDPoPMethod means htm does not match the request method.
	ReasonDPoPMethod = "DPOP_METHOD"
	// ReasonDPoPURL means htu does not match the request URL.
	ReasonDPoPURL = "DPOP_URL"
	// ReasonDPoPIssuedAt means iat is too old or in the future.
	ReasonDPoPIssuedAt = "DPOP_IAT"
	// ReasonDPoPAccessTokenHash means ath is missing or does not match the presented access token.
	ReasonDPoPAccessTokenHash = "DPOP_ATH"
	// ReasonDPoPNonce means the proof lacks the nonce the server requires, or carries a stale one: the
	// caller should retry with the nonce from the DPoP-Nonce response header (use_dpop_nonce).
	ReasonDPoPNonce = "DPOP_NONCE"
	// ReasonDPoPKeyMismatch means the proof's key is not the key the access token is bound to (cnf.jkt).
	ReasonDPoPKeyMismatch = "DPOP_KEY_MISMATCH"
	// ReasonDPoPReplayed means the proof's jti was already used.
	ReasonDPoPReplayed = "DPOP_REPLAYED"
)

// dpopAlgs are the proof algorithms accepted: asymmetric only, never none or HMAC.
var dpopAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// DPoPAlgorithms returns the JWS algorithms accepted for DPoP proofs (dpop_signing_alg_values_supported).
func DPoPAlgorithms() []string { return []string{string(jose.ES256), string(jose.EdDSA)} }

// DPoPProver makes DPoP proofs with one private key (ES256 or Ed25519). It is safe for concurrent use.
type DPoPProver struct {
	signer jose.Signer
	jkt    string
}

// NewDPoPProver returns a prover for a private ES256 (P-256) or Ed25519 key.
func NewDPoPProver(key jose.JSONWebKey) (*DPoPProver, error) {
	alg, err := signingAlg(key)
	if err != nil {
		return nil, fmt.Errorf("authn: DPoP key: %w", err)
	}
	jkt, err := Thumbprint(key.Public())
	if err != nil {
		return nil, err
	}
	// Only the raw key is signed with, so the embedded jwk carries no kid, alg or use of the caller's.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key.Key},
		(&jose.SignerOptions{EmbedJWK: true}).WithType(DPoPProofType))
	if err != nil {
		return nil, fmt.Errorf("authn: DPoP signer: %w", err)
	}
	return &DPoPProver{signer: signer, jkt: jkt}, nil
}

// JKT returns the RFC 7638 SHA-256 thumbprint of the prover's public key: the cnf.jkt of tokens
// bound to it.
func (p *DPoPProver) JKT() string { return p.jkt }

type dpopClaims struct {
	ID       string           `json:"jti,omitempty"`
	Method   string           `json:"htm,omitempty"`
	URL      string           `json:"htu,omitempty"`
	IssuedAt *jwt.NumericDate `json:"iat,omitempty"`
	ATH      string           `json:"ath,omitempty"`
	Nonce    string           `json:"nonce,omitempty"`
}

// Proof returns a DPoP proof for a request: htm = method, htu = rawURL without query and fragment,
// iat = now, a random jti, ath = AccessTokenHash(accessToken) when accessToken is set, and nonce
// when set.
func (p *DPoPProver) Proof(method, rawURL, accessToken, nonce string, now time.Time) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("authn: DPoP proof URL %q is not an absolute http(s) URL", rawURL)
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	if method == "" {
		return "", errors.New("authn: DPoP proof needs a method")
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("authn: DPoP proof jti: %w", err)
	}
	c := dpopClaims{
		ID: base64.RawURLEncoding.EncodeToString(jti), Method: method, URL: u.String(),
		IssuedAt: jwt.NewNumericDate(now), Nonce: nonce,
	}
	if accessToken != "" {
		c.ATH = AccessTokenHash(accessToken)
	}
	s, err := jwt.Signed(p.signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("authn: sign DPoP proof: %w", err)
	}
	return s, nil
}

// AccessTokenHash returns the ath of a DPoP proof for an access token: base64url(SHA-256(token)).
func AccessTokenHash(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// DPoPCheck is what a DPoP proof must match.
type DPoPCheck struct {
	// Method is the HTTP method of the request (htm). Required.
	Method string
	// URL is the request URL (htu); query and fragment are ignored. Required.
	URL string
	// AccessToken, when set, is the access token presented with the proof: ath must be its hash.
	AccessToken string
	// Nonce, when set, is the nonce the proof must carry.
	Nonce string
	// NonceOK, when set, must accept the proof's nonce (a missing nonce is refused); it takes
	// precedence over Nonce. Use it for nonces valid over a time window.
	NonceOK func(nonce string) bool
	// Now is the time to check iat against; default time.Now().
	Now time.Time
	// MaxAge is how old iat may be; default DefaultDPoPMaxAge.
	MaxAge time.Duration
	// Leeway is how far in the future iat may be; default DefaultDPoPLeeway.
	Leeway time.Duration
}

// DPoPProof is a verified DPoP proof.
type DPoPProof struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof's public key.
	JKT string
	// ID is the proof's jti; the caller makes it single-use.
	ID string
	// Nonce is the proof's nonce, if any.
	Nonce string
	// IssuedAt is the proof's iat.
	IssuedAt time.Time
}

func dpopError(reason, msg string, cause error) *errs.Error {
	return errs.Unauthenticated(reason, msg).WithCause(cause)
}

// VerifyDPoPProof verifies a DPoP proof as RFC 9449 §4.3 says: one compact JWS of typ dpop+jwt,
// signed with ES256 or EdDSA by the public key in its jwk header; jti, htm, htu and iat present;
// htm and htu matching the request; iat within the window; ath and nonce as c requires. It returns
// the proof's key thumbprint and jti, or an Unauthenticated *errs.Error with a ReasonDPoP* reason.
// It does not check that the jti is unused: the caller does (a replay cache).
func VerifyDPoPProof(raw string, c DPoPCheck) (*DPoPProof, error) {
	if raw == "" {
		return nil, dpopError(ReasonDPoPMissing, "DPoP proof missing", nil)
	}
	if len(raw) > MaxDPoPProofBytes {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", fmt.Errorf("proof larger than %d bytes", MaxDPoPProofBytes))
	}
	tok, err := jwt.ParseSigned(raw, dpopAlgs)
	if err != nil {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", err)
	}
	if len(tok.Headers) != 1 {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", errors.New("want exactly one signature"))
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != DPoPProofType {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", fmt.Errorf("typ %q, want %s", typ, DPoPProofType))
	}
	key, err := dpopKey(h)
	if err != nil {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", err)
	}
	var claims dpopClaims
	if err := tok.Claims(key, &claims); err != nil {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof signature is invalid", err)
	}
	switch {
	case claims.ID == "" || len(claims.ID) > maxDPoPJTILen:
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", errors.New("jti missing or too long"))
	case claims.Method == "" || claims.URL == "" || claims.IssuedAt == nil:
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", errors.New("htm, htu or iat missing"))
	case len(claims.Nonce) > maxDPoPNonceLen:
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", errors.New("nonce too long"))
	}
	if c.Method == "" || claims.Method != c.Method {
		return nil, dpopError(ReasonDPoPMethod, "DPoP proof htm does not match the request method",
			fmt.Errorf("htm %q, request %q", claims.Method, c.Method))
	}
	if !sameHTU(claims.URL, c.URL) {
		return nil, dpopError(ReasonDPoPURL, "DPoP proof htu does not match the request URL",
			fmt.Errorf("htu %q, request %q", claims.URL, c.URL))
	}
	now, maxAge, leeway := c.Now, c.MaxAge, c.Leeway
	if now.IsZero() {
		now = time.Now()
	}
	if maxAge <= 0 {
		maxAge = DefaultDPoPMaxAge
	}
	if leeway <= 0 {
		leeway = DefaultDPoPLeeway
	}
	iat := claims.IssuedAt.Time()
	switch {
	case iat.After(now.Add(leeway)):
		return nil, dpopError(ReasonDPoPIssuedAt, "DPoP proof iat is in the future", fmt.Errorf("iat %s, now %s", iat.UTC(), now.UTC()))
	case now.Sub(iat) > maxAge:
		return nil, dpopError(ReasonDPoPIssuedAt, "DPoP proof is too old", fmt.Errorf("iat %s, now %s", iat.UTC(), now.UTC()))
	}
	if c.AccessToken != "" {
		if claims.ATH == "" {
			return nil, dpopError(ReasonDPoPAccessTokenHash, "DPoP proof has no ath for the access token", nil)
		}
		if subtle.ConstantTimeCompare([]byte(claims.ATH), []byte(AccessTokenHash(c.AccessToken))) != 1 {
			return nil, dpopError(ReasonDPoPAccessTokenHash, "DPoP proof ath does not match the access token", nil)
		}
	}
	switch {
	case c.NonceOK != nil:
		if claims.Nonce == "" || !c.NonceOK(claims.Nonce) {
			return nil, dpopError(ReasonDPoPNonce, "DPoP proof needs a current server nonce", nil)
		}
	case c.Nonce != "":
		if subtle.ConstantTimeCompare([]byte(claims.Nonce), []byte(c.Nonce)) != 1 {
			return nil, dpopError(ReasonDPoPNonce, "DPoP proof needs a current server nonce", nil)
		}
	}
	jkt, err := Thumbprint(*h.JSONWebKey)
	if err != nil {
		return nil, dpopError(ReasonDPoPInvalid, "DPoP proof is invalid", err)
	}
	return &DPoPProof{JKT: jkt, ID: claims.ID, Nonce: claims.Nonce, IssuedAt: iat.UTC()}, nil
}

// dpopKey returns the public key of the proof's jwk header, which must suit the header's alg.
func dpopKey(h jose.Header) (any, error) {
	jwk := h.JSONWebKey
	if jwk == nil || jwk.Key == nil {
		return nil, errors.New("no jwk header")
	}
	if !jwk.IsPublic() {
		return nil, errors.New("jwk header is not a public key")
	}
	alg := jose.SignatureAlgorithm(h.Algorithm)
	if jwk.Algorithm != "" && jwk.Algorithm != string(alg) {
		return nil, fmt.Errorf("jwk is for %s, proof uses %s", jwk.Algorithm, alg)
	}
	switch pub := jwk.Key.(type) {
	case *ecdsa.PublicKey:
		if alg == jose.ES256 && pub.Curve == elliptic.P256() {
			return pub, nil
		}
	case ed25519.PublicKey:
		if alg == jose.EdDSA {
			return pub, nil
		}
	}
	return nil, fmt.Errorf("jwk %T cannot verify %s", jwk.Key, alg)
}

// sameHTU reports whether a proof's htu designates the request URL (RFC 9449 §4.3): query and
// fragment ignored, scheme and host compared case-insensitively, default ports dropped, percent
// encodings normalised.
func sameHTU(htu, request string) bool {
	a, ok := normalHTU(htu)
	if !ok {
		return false
	}
	b, ok := normalHTU(request)
	return ok && a == b
}

func normalHTU(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	path := normalPercent(u.EscapedPath())
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, true
}

// normalPercent upper-cases the hex digits of percent encodings and decodes those of unreserved
// characters (RFC 3986 §6.2.2).
func normalPercent(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b.WriteByte(p[i])
			continue
		}
		hi, lo := unhex(p[i+1]), unhex(p[i+2])
		if hi < 0 || lo < 0 {
			b.WriteByte(p[i])
			continue
		}
		c := byte(hi<<4 | lo)
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
		i += 2
	}
	return b.String()
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// CheckDPoPBinding checks that a verified proof was made with the key the access token is bound to
// (cnf.jkt): an Unauthenticated *errs.Error with ReasonDPoPKeyMismatch otherwise.
func CheckDPoPBinding(c *Claims, p *DPoPProof) error {
	if c == nil || c.Confirmation == nil || c.Confirmation.JKT == "" {
		return dpopError(ReasonDPoPKeyMismatch, "access token is not DPoP-bound", nil)
	}
	if p == nil || subtle.ConstantTimeCompare([]byte(c.Confirmation.JKT), []byte(p.JKT)) != 1 {
		return dpopError(ReasonDPoPKeyMismatch, "DPoP proof key does not match the access token", nil)
	}
	return nil
}

// DPoPProofFromHeader returns the DPoP proof of an HTTP request: "" when there is none, an
// Unauthenticated *errs.Error (ReasonDPoPInvalid) when there is more than one (RFC 9449 §4.3).
func DPoPProofFromHeader(h http.Header) (string, error) {
	vs := h.Values(DPoPHeader)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1 || strings.Contains(vs[0], ","):
		return "", dpopError(ReasonDPoPInvalid, "more than one DPoP proof", nil)
	}
	return strings.TrimSpace(vs[0]), nil
}
