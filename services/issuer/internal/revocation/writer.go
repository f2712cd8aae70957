// Package revocation is the one place the issuer writes revocations: it checks a TokensRevoked event
// and appends it to the REVOCATIONS stream (type tokens.revoked, aggregate revocation). The RFC 7009
// endpoint, the IssuerService.RevokeTokens API and the revocation reactor all write through a Writer.
package revocation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// Limits and defaults of revocations.
const (
	// MaxReasonBytes bounds TokensRevoked.reason.
	MaxReasonBytes = 512
	// Leeway is added to the time a revocation by not-before time can be forgotten: a token issued
	// by a replica whose clock runs a little ahead carries an iat that late. (Verifiers keep every
	// entry their own leeway past expire_time: authn.DefaultRevocationRetention.)
	Leeway = time.Minute
	// maxIDBytes bounds token ids, client ids, subjects, key ids, source event ids and request ids.
	maxIDBytes = 256
)

// ServiceActor is the actor of revocations the issuer writes on its own behalf (the reactor).
var ServiceActor = eventstore.Actor{ID: "issuer", Kind: eventstore.ActorService}

// idNamespace derives a revocation's id from its tenant and request id, so that a retried request
// appends to the same aggregate and the store's idempotency (Nats-Msg-Id) returns the first event.
var idNamespace = uuid.MustParse("6f1d7a4e-3c2b-5e8f-9a10-7b6c5d4e3f21")

// Store is what the writer needs from the event store.
type Store interface {
	Append(ctx context.Context, a eventstore.Append) (eventstore.Event, error)
}

// Writer appends revocations. It is safe for concurrent use.
type Writer struct {
	// Store appends the events. Required.
	Store Store
}

// ExpireTime is when a revocation by not-before time can be forgotten: every token it covers was
// issued at or before notBefore and so has expired by notBefore + authn.MaxTokenLifetime.
func ExpireTime(notBefore time.Time) time.Time {
	return notBefore.Add(authn.MaxTokenLifetime + Leeway)
}

// TokenExpireTime is when the revocation of one token that expires at exp can be forgotten: exp
// (verifiers keep the entry as long past it as they accept the token).
func TokenExpireTime(exp time.Time) time.Time { return exp }

// Name is the resource name of revocation id of tenant: tenants/{tenant}/revocations/{id}.
func Name(tenant, id string) string { return "tenants/" + tenant + "/revocations/" + id }

// ID is the id of the revocation that requestID creates in tenant.
func ID(tenant, requestID string) string {
	return uuid.NewSHA1(idNamespace, []byte(tenant+"\x00"+requestID)).String()
}

// Revoke checks ev and appends it as a tokens.revoked event of ev.tenant, idempotently by requestID
// (a new one is made when empty): repeating a request returns the revocation it stored. For the
// targets with a not-before time an unset expire_time is set to ExpireTime(not_before). md says who
// revokes (default ServiceActor); its causation id defaults to ev.source_event_id. Errors are pkg/errs
// kinds: InvalidArgument naming the field, Unavailable when the store fails; nothing is written on
// any error.
func (w *Writer) Revoke(ctx context.Context, md eventstore.Metadata, ev *issuerv1.TokensRevoked, requestID string) (*issuerv1.Revocation, error) {
	if w == nil || w.Store == nil {
		return nil, errs.Internal(errors.New("revocation: Writer.Store is nil"))
	}
	ev = proto.CloneOf(ev)
	if err := Check(ev); err != nil {
		return nil, err
	}
	if requestID == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, errs.Internal(err)
		}
		requestID = u.String()
	} else if err := checkText("request_id", requestID, 128); err != nil {
		return nil, err
	}
	tenant := ev.GetTenant()
	md.Tenant = tenant
	if md.Actor.ID == "" {
		md.Actor = ServiceActor
	}
	if md.CausationID == "" {
		md.CausationID = ev.GetSourceEventId()
	}
	id := ID(tenant, requestID)
	stored, err := w.Store.Append(ctx, eventstore.Append{
		Tenant:          tenant,
		AggregateType:   eventstore.AggregateRevocation,
		AggregateID:     id,
		ExpectedVersion: 0,
		IdempotencyKey:  requestID,
		Type:            eventstore.TypeTokensRevoked,
		Subject:         Name(tenant, id),
		Data:            ev,
		Metadata:        md,
	})
	if err != nil {
		return nil, storeError(err)
	}
	got, err := eventstore.DecodeAs[*issuerv1.TokensRevoked](stored)
	if err != nil {
		return nil, errs.Internal(fmt.Errorf("revocation: decode stored event %s: %w", stored.ID, err))
	}
	if !sameRevocation(got, ev) {
		return nil, errs.InvalidArgument("request_id", "was already used for a different revocation")
	}
	return &issuerv1.Revocation{
		Name:       Name(tenant, id),
		Event:      got,
		CreateTime: timestamppb.New(stored.Time),
		Sequence:   stored.Sequence,
	}, nil
}

// sameRevocation reports whether a repeated request asks for what the stored event revoked: the same
// target and cause, and for a whole tenant the same time. The not-before time of a client or agent is
// the time of the request and so differs between retries.
func sameRevocation(stored, req *issuerv1.TokensRevoked) bool {
	same := stored.GetTarget() == req.GetTarget() && stored.GetTenant() == req.GetTenant() &&
		stored.GetTokenId() == req.GetTokenId() && stored.GetClientId() == req.GetClientId() &&
		stored.GetAgent() == req.GetAgent() && stored.GetSubject() == req.GetSubject() &&
		stored.GetKeyId() == req.GetKeyId() && stored.GetCause() == req.GetCause() &&
		stored.GetSourceEventId() == req.GetSourceEventId() &&
		stored.GetClientKeyThumbprint() == req.GetClientKeyThumbprint()
	if same && req.GetTarget() == issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT {
		same = stored.GetNotBefore().AsTime().Equal(req.GetNotBefore().AsTime())
	}
	return same
}

// Check validates a revocation event: a tenant; a target with its one identifying field set and the
// others empty; not_before for the client, agent, subject and tenant targets (an unset expire_time is
// then filled in); expire_time for the token and key targets, not before not_before; a cause; a
// reason of at most MaxReasonBytes of UTF-8 text.
func Check(ev *issuerv1.TokensRevoked) error {
	if ev == nil {
		return errs.InvalidArgument("revocation", "is required")
	}
	if !authn.ValidTenant(ev.GetTenant()) {
		return errs.InvalidArgument("tenant", "must be a tenant id")
	}
	ids := [...]struct{ field, v string }{
		{"token_id", ev.GetTokenId()}, {"client_id", ev.GetClientId()}, {"agent", ev.GetAgent()},
		{"subject", ev.GetSubject()}, {"key_id", ev.GetKeyId()},
	}
	var want string // the identifying field of the target
	withNotBefore := true
	switch ev.GetTarget() {
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TOKEN:
		want, withNotBefore = "token_id", false
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT:
		want = "client_id"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT:
		want = "agent"
		if rest, ok := strings.CutPrefix(ev.GetAgent(), "tenants/"+ev.GetTenant()+"/agents/"); !ok || rest == "" || strings.Contains(rest, "/") {
			return errs.InvalidArgument("agent", "must be an agent of the tenant: tenants/"+ev.GetTenant()+"/agents/{agent}")
		}
	case issuerv1.RevocationTarget_REVOCATION_TARGET_SUBJECT:
		want = "subject"
	case issuerv1.RevocationTarget_REVOCATION_TARGET_TENANT:
	case issuerv1.RevocationTarget_REVOCATION_TARGET_KEY:
		want, withNotBefore = "key_id", false
	case issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY:
		want = "client_id"
		if err := checkText("client_key_thumbprint", ev.GetClientKeyThumbprint(), maxIDBytes); err != nil {
			return err
		}
	default:
		return errs.InvalidArgument("target", "must be one of TOKEN, CLIENT, AGENT, SUBJECT, TENANT, KEY, CLIENT_KEY")
	}
	if ev.GetTarget() != issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT_KEY && ev.GetClientKeyThumbprint() != "" {
		return errs.InvalidArgument("client_key_thumbprint", "must be empty for target "+ev.GetTarget().String())
	}
	for _, id := range ids {
		switch {
		case id.field != want && id.v != "":
			return errs.InvalidArgument(id.field, "must be empty for target "+ev.GetTarget().String())
		case id.field == want:
			if err := checkText(id.field, id.v, maxIDBytes); err != nil {
				return err
			}
		}
	}
	switch {
	case withNotBefore && ev.GetNotBefore() == nil:
		return errs.InvalidArgument("not_before", "is required for target "+ev.GetTarget().String())
	case !withNotBefore && ev.GetNotBefore() != nil:
		return errs.InvalidArgument("not_before", "must be empty for target "+ev.GetTarget().String())
	case ev.GetNotBefore() != nil && !ev.GetNotBefore().IsValid():
		return errs.InvalidArgument("not_before", "is not a valid time")
	case withNotBefore && ev.GetExpireTime() == nil:
		ev.ExpireTime = timestamppb.New(ExpireTime(ev.GetNotBefore().AsTime()))
	case ev.GetExpireTime() == nil:
		return errs.InvalidArgument("expire_time", "is required for target "+ev.GetTarget().String())
	}
	switch {
	case !ev.GetExpireTime().IsValid():
		return errs.InvalidArgument("expire_time", "is not a valid time")
	case withNotBefore && ev.GetExpireTime().AsTime().Before(ev.GetNotBefore().AsTime()):
		return errs.InvalidArgument("expire_time", "must not be before not_before")
	case ev.GetCause() == issuerv1.RevocationCause_REVOCATION_CAUSE_UNSPECIFIED:
		return errs.InvalidArgument("cause", "is required")
	case len(ev.GetReason()) > MaxReasonBytes || !utf8.ValidString(ev.GetReason()) || strings.ContainsRune(ev.GetReason(), 0):
		return errs.InvalidArgument("reason", fmt.Sprintf("must be UTF-8 text of at most %d bytes", MaxReasonBytes))
	}
	if id := ev.GetSourceEventId(); id != "" {
		if err := checkText("source_event_id", id, maxIDBytes); err != nil {
			return err
		}
	}
	return nil
}

// checkText checks that v is a non-empty printable ASCII identifier of at most n bytes.
func checkText(field, v string, n int) error {
	if v == "" {
		return errs.InvalidArgument(field, "is required")
	}
	if len(v) > n {
		return errs.InvalidArgument(field, fmt.Sprintf("must be at most %d bytes", n))
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return errs.InvalidArgument(field, "must be printable ASCII without spaces")
		}
	}
	return nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, eventstore.ErrIdempotencyKeyReused):
		return errs.InvalidArgument("request_id", "was already used for a different request")
	case errors.Is(err, eventstore.ErrInvalid):
		return errs.Internal(fmt.Errorf("revocation: append: %w", err))
	case errors.Is(err, eventstore.ErrConflict):
		return errs.Conflict("REVOCATION_CONFLICT", "the revocation changed concurrently, retry").WithCause(err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errs.Unavailable("EVENT_STORE_UNAVAILABLE", "the event store did not answer in time, retry", err)
	default:
		return errs.Unavailable("EVENT_STORE_UNAVAILABLE", "the event store is unavailable, retry later", fmt.Errorf("revocation: append: %w", err))
	}
}
