package oauth

import (
	"context"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/revocation"
)

// RevocationWriter stores revocations (revocation.Writer).
type RevocationWriter interface {
	Revoke(ctx context.Context, md eventstore.Metadata, ev *issuerv1.TokensRevoked, requestID string) (*issuerv1.Revocation, error)
}

// Denylist says whether a verified token has been revoked (authn.Denylist fed from REVOCATIONS).
type Denylist interface {
	Check(c *authn.Claims, kid string) error
}

// RevocationEndpoint is the RFC 7009 revocation endpoint URL of tenant.
func (s *Server) RevocationEndpoint(tenant string) string { return s.Issuer(tenant) + "/oauth2/revoke" }

// RevocationRequest is a parsed RFC 7009 revocation request.
type RevocationRequest struct {
	// Token is the token to revoke.
	Token string
	// TokenTypeHint is token_type_hint; the issuer issues access tokens only, so it is ignored
	// (RFC 7009 §2.1).
	TokenTypeHint string
	// Client authenticates the client (private_key_jwt).
	Client ClientAuth
}

// ParseRevocationRequest parses the form of a revocation request; token is required.
func ParseRevocationRequest(contentType string, body []byte) (*RevocationRequest, *Error) {
	form, oerr := ParseForm(contentType, body)
	if oerr != nil {
		return nil, oerr
	}
	req := &RevocationRequest{
		Token:         form.Get("token"),
		TokenTypeHint: form.Get("token_type_hint"),
		Client: ClientAuth{
			ClientID:      form.Get("client_id"),
			AssertionType: form.Get("client_assertion_type"),
			Assertion:     form.Get("client_assertion"),
		},
	}
	if req.Token == "" {
		return req, invalidRequest("missing token")
	}
	return req, nil
}

// Revoke answers an RFC 7009 revocation request for tenant. The client authenticates as at the
// token endpoint (private_key_jwt, assertion used once, aud the issuer identifier alone) and may
// revoke only its own tokens. A token that is malformed, unknown,
// expired, of another tenant or of another client changes nothing and is answered as a success
// (RFC 7009 §2.2). A revocation that could not be stored is temporarily_unavailable (503), never a
// success.
func (s *Server) Revoke(ctx context.Context, tenant string, r Request) *Error {
	if !s.KnownTenant(tenant) {
		return ErrUnknownTenant()
	}
	body, oerr := ReadBody(r.Body)
	if oerr != nil {
		return oerr
	}
	req, oerr := ParseRevocationRequest(r.ContentType, body)
	if oerr != nil {
		return oerr
	}
	req.Client.HeaderScheme, _ = authScheme(r.Authorization)
	client, oerr := s.authenticate(ctx, tenant, r.RemoteAddr, req.Client, nil)
	if oerr != nil {
		if oerr.Status < 500 {
			s.logger.InfoContext(ctx, "revocation caller not authenticated", "tenant", tenant,
				"reason", oerr.Reason, "cause", oerr.Cause, "request_id", r.RequestID)
		}
		return oerr
	}
	claims, _, err := s.VerifyForRevocation(tenant, req.Token)
	switch {
	case err != nil || claims.ID == "":
		s.logger.InfoContext(ctx, "token to revoke is not an unexpired token of the tenant; nothing revoked", "tenant", tenant,
			"client_id", client.ID(), "reason", err, "request_id", r.RequestID)
		return nil
	case claims.ClientID != client.ID():
		s.logger.WarnContext(ctx, "a client asked to revoke another client's token; nothing revoked", "tenant", tenant,
			"client_id", client.ID(), "token_client_id", claims.ClientID, "jti", claims.ID, "request_id", r.RequestID)
		return nil
	case s.revoked == nil:
		return unavailable(errors.New("oauth: no revocation writer configured"))
	}
	kind := eventstore.ActorService
	if client.Proto.GetAgent() != "" {
		kind = eventstore.ActorAgent
	}
	md := eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: client.ID(), Kind: kind},
		CorrelationID: headerSafe(r.RequestID)}
	ev := &issuerv1.TokensRevoked{
		Target:     issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN,
		Tenant:     tenant,
		TokenId:    claims.ID,
		ExpireTime: timestamppb.New(revocation.TokenExpireTime(claims.Expiry)),
		Cause:      issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_REQUEST,
	}
	// One token is revoked once, however often it is asked for.
	rev, err := s.revoked.Revoke(ctx, md, ev, "revoke-token:"+claims.ID)
	switch {
	case errs.Is(err, errs.KindUnavailable):
		return unavailable(err)
	case err != nil:
		return serverError(err)
	}
	s.logger.InfoContext(ctx, "token revoked", "tenant", tenant, "client_id", client.ID(), "jti", claims.ID,
		"revocation", rev.GetName(), "seq", rev.GetSequence(), "request_id", r.RequestID)
	return nil
}
