package authn

import (
	"context"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/agentid/agentid/pkg/errs"
)

// Approval tokens: a person's proof of one decision on one step of one provisioning run, minted by the
// tenant's issuer (IssuerService.IssueApprovalToken) and verified by the provisioning workflow.
const (
	// ApprovalTokenType is the JWT "typ" header of approval tokens.
	ApprovalTokenType = "approval+jwt"
	// ApprovalAudience is the only audience of approval tokens.
	ApprovalAudience = "urn:agentid:approval"
	// MaxApprovalTokenLifetime is the longest lifetime (exp - iat) of an approval token.
	MaxApprovalTokenLifetime = 5 * time.Minute
)

// Reasons of approval tokens that do not verify.
const (
	// ReasonApprovalTokenInvalid: malformed, wrongly signed, wrong typ or audience, lifetime too long.
	ReasonApprovalTokenInvalid = "APPROVAL_TOKEN_INVALID"
	// ReasonApprovalTokenExpired: the token has expired (or is not valid yet).
	ReasonApprovalTokenExpired = "APPROVAL_TOKEN_EXPIRED"
)

// ApprovalClaims are the claims of an approval token.
type ApprovalClaims struct {
	// Issuer is "iss", the tenant issuer identifier {public_url}/t/{tenant}.
	Issuer string `json:"iss"`
	// Subject is "sub": the person who decides (the subject of the access token they asked with).
	Subject string `json:"sub"`
	// Audience is "aud": exactly ApprovalAudience.
	Audience string `json:"aud"`
	// Tenant is "tenant"; it matches the issuer's tenant.
	Tenant string `json:"tenant"`
	// Agent is "agent", the agent's resource name tenants/{tenant}/agents/{agent}.
	Agent string `json:"agent"`
	// Step is "step", the approval step (e.g. owner, security).
	Step string `json:"step"`
	// Decision is "decision": approve or reject.
	Decision string `json:"decision"`
	// Run is "run", the Temporal run id of the provisioning run.
	Run string `json:"run"`
	// Roles is "roles": the platform roles the person held in the tenant when the token was minted.
	Roles []string `json:"roles,omitempty"`
	// ID is "jti"; a run takes each token once.
	ID string `json:"jti"`
	// IssuedAt is "iat" (NumericDate).
	IssuedAt int64 `json:"iat"`
	// Expiry is "exp" (NumericDate), at most MaxApprovalTokenLifetime after IssuedAt.
	Expiry int64 `json:"exp"`
}

// VerifyApproval verifies an approval token against the JWKS of the tenant issuer named in it: ES256
// or EdDSA, typ ApprovalTokenType, exactly one audience ApprovalAudience, a tenant matching the
// issuer, every binding claim present, exp - iat at most MaxApprovalTokenLifetime and the token valid
// now (with the verifier's leeway), and then the verifier's Revocations, as for an access token of the
// approver: its tenant, subject, client (approval tokens are minted only for people acting for
// themselves, whose client id is their subject), jti, iat and signing key, so that an approver disabled
// within the token's life no longer counts. It checks neither the bindings (agent, step, run) nor single
// use: that is the provisioning run's part. Errors are Unauthenticated with reason
// ReasonApprovalTokenInvalid, ReasonApprovalTokenExpired or ReasonTokenRevoked (Unavailable when the
// keys cannot be fetched).
func (v *JWKSVerifier) VerifyApproval(ctx context.Context, raw string) (*ApprovalClaims, error) {
	bad := func(msg string, cause error) error {
		return invalid(ReasonApprovalTokenInvalid, "approval token is invalid: "+msg, cause)
	}
	if raw == "" {
		return nil, bad("empty", nil)
	}
	if len(raw) > maxTokenBytes {
		return nil, bad("too large", nil)
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		return nil, bad("not a signed JWT", err)
	}
	if len(tok.Headers) != 1 {
		return nil, bad("want exactly one signature", nil)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, ApprovalTokenType) &&
		!strings.EqualFold(typ, "application/"+ApprovalTokenType) {
		return nil, bad(fmt.Sprintf("typ %q is not %s", typ, ApprovalTokenType), nil)
	}
	if h.KeyID == "" {
		return nil, bad("no kid in the header", nil)
	}
	// The issuer is read before the signature is checked only to choose whose keys to check it with.
	var unverified ApprovalClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, bad("claims do not decode", err)
	}
	tenant, ok := v.tenantOf(unverified.Issuer)
	if !ok {
		return nil, bad(fmt.Sprintf("issuer %q is not trusted", unverified.Issuer), nil)
	}
	key, _, err := v.key(ctx, tenant, h.KeyID, jose.SignatureAlgorithm(h.Algorithm))
	if err != nil {
		if errs.Is(err, errs.KindUnavailable) {
			return nil, err
		}
		return nil, bad(fmt.Sprintf("signing key %q of tenant %s", h.KeyID, tenant), err)
	}
	var c ApprovalClaims
	if err := tok.Claims(key, &c); err != nil {
		return nil, bad("signature does not verify with the tenant's keys", err)
	}
	switch {
	case c.Tenant != tenant:
		return nil, bad(fmt.Sprintf("tenant %q is not the issuer's tenant %q", c.Tenant, tenant), nil)
	case c.Audience != ApprovalAudience:
		return nil, bad(fmt.Sprintf("audience %q is not %s", c.Audience, ApprovalAudience), nil)
	case c.Subject == "" || c.Agent == "" || c.Step == "" || c.Decision == "" || c.Run == "" || c.ID == "":
		return nil, bad("sub, agent, step, decision, run and jti are required", nil)
	case c.IssuedAt == 0 || c.Expiry == 0:
		return nil, bad("iat and exp are required", nil)
	case c.Expiry <= c.IssuedAt || time.Duration(c.Expiry-c.IssuedAt)*time.Second > MaxApprovalTokenLifetime:
		return nil, bad(fmt.Sprintf("lifetime %ds is not within (0, %s]", c.Expiry-c.IssuedAt, MaxApprovalTokenLifetime), nil)
	}
	now := v.now()
	if now.After(time.Unix(c.Expiry, 0).Add(v.leeway)) {
		return nil, invalid(ReasonApprovalTokenExpired, "approval token has expired", nil)
	}
	if time.Unix(c.IssuedAt, 0).After(now.Add(v.leeway)) {
		return nil, invalid(ReasonApprovalTokenExpired, "approval token is not valid yet", nil)
	}
	if v.revoked != nil {
		approver := &Claims{Tenant: c.Tenant, Subject: c.Subject, ClientID: c.Subject, ID: c.ID,
			IssuedAt: time.Unix(c.IssuedAt, 0)}
		if err := v.revoked.Check(approver, h.KeyID); err != nil {
			if errs.Is(err, errs.KindUnavailable) {
				return nil, err
			}
			return nil, invalid(ReasonTokenRevoked, "approval token has been revoked", err)
		}
	}
	return &c, nil
}
