package credentials

import (
	"context"
	"crypto"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// Event types of client key rotation (stream CREDENTIALS).
const (
	// EventClientKeyAdded records a public key added to a client (issuerv1.ClientKeyAdded).
	EventClientKeyAdded = "client.key_added"
	// EventClientKeyRemoved records a public key removed from a client (issuerv1.ClientKeyRemoved).
	EventClientKeyRemoved = "client.key_removed"
)

// KeyThumbprint is the RFC 7638 SHA-256 thumbprint of k, base64url without padding: the value of the
// `ckt` claim of tokens obtained with k and of CLIENT_KEY revocations.
func KeyThumbprint(k jose.JSONWebKey) (string, error) {
	t, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}

// ClientKeyThumbprint returns the thumbprint of the client's key kid, "" when it has none.
func (c *Client) ClientKeyThumbprint(kid string) string {
	k, ok := c.Keys[kid]
	if !ok {
		return ""
	}
	tp, err := KeyThumbprint(k)
	if err != nil {
		return ""
	}
	return tp
}

// parseClientJWK parses one public JWK as client registration accepts keys and returns it with its
// canonical JSON and thumbprint. Errors are InvalidArgument on public_jwk.
func parseClientJWK(raw string) (jose.JSONWebKey, string, string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &members); err != nil {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", "is not a JWK (a JSON object)")
	}
	if _, ok := members["keys"]; ok {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", "must be one JWK, not a JWK Set")
	}
	set, err := json.Marshal(map[string]any{"keys": []json.RawMessage{json.RawMessage(raw)}})
	if err != nil {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", "is not a JWK")
	}
	list, err := authn.ParsePublicJWKS(string(set), 1)
	if err != nil {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", err.Error())
	}
	canon, err := list[0].MarshalJSON()
	if err != nil {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", "is not a JWK")
	}
	tp, err := KeyThumbprint(list[0])
	if err != nil {
		return jose.JSONWebKey{}, "", "", errs.InvalidArgument("public_jwk", "has no thumbprint: "+err.Error())
	}
	return list[0], string(canon), tp, nil
}

// editClientJWKS returns the JWK Set raw with addJWK appended or the key of removeThumbprint left out.
func editClientJWKS(raw, addJWK, removeThumbprint string) (string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		return "", fmt.Errorf("public_jwks is not a JWK Set: %w", err)
	}
	out := make([]json.RawMessage, 0, len(doc.Keys)+1)
	for _, m := range doc.Keys {
		if removeThumbprint != "" {
			var k jose.JSONWebKey
			if err := k.UnmarshalJSON(m); err == nil {
				if tp, err := KeyThumbprint(k); err == nil && tp == removeThumbprint {
					continue
				}
			}
		}
		out = append(out, m)
	}
	if addJWK != "" {
		out = append(out, json.RawMessage(addJWK))
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	return string(b), err
}

// applyClientKeyEvent folds client.key_added or client.key_removed into the client it names. Adding a
// key the client has, or removing one it has not, changes nothing. The result is re-checked as a
// registration is (at most maxClientKeys keys, kids unique), so an event appended around the commands
// cannot leave a client with keys the commands would refuse.
func (s *State) applyClientKeyEvent(e eventstore.Event) error {
	tenant := e.Metadata.Tenant
	var add, remove string
	switch e.Type {
	case EventClientKeyAdded:
		m, err := eventstore.DecodeAs[*issuerv1.ClientKeyAdded](e)
		if err != nil {
			return err
		}
		if m.GetName() != ClientName(tenant, e.AggregateID) {
			return eventstore.Permanent(fmt.Errorf("%s event %s: name %q on aggregate %s/%s", e.Type, e.ID, m.GetName(), tenant, e.AggregateID))
		}
		add = m.GetPublicJwk()
	case EventClientKeyRemoved:
		m, err := eventstore.DecodeAs[*issuerv1.ClientKeyRemoved](e)
		if err != nil {
			return err
		}
		if m.GetName() != ClientName(tenant, e.AggregateID) {
			return eventstore.Permanent(fmt.Errorf("%s event %s: name %q on aggregate %s/%s", e.Type, e.ID, m.GetName(), tenant, e.AggregateID))
		}
		remove = m.GetThumbprint()
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.tenantLocked(tenant)
	old, ok := ts.clients[e.AggregateID]
	if !ok || old.Tombstone() {
		return fmt.Errorf("%s event %s for unknown client %s/%s", e.Type, e.ID, tenant, e.AggregateID)
	}
	p, keys, err := clientWithKeyChange(old.Proto, add, remove)
	if err != nil {
		return eventstore.Permanent(fmt.Errorf("%s event %s refused: %w", e.Type, e.ID, err))
	}
	if p == nil {
		return nil
	}
	ts.clients[e.AggregateID] = &Client{Proto: p, Keys: keys, TokenTTL: old.TokenTTL, RevokeTime: old.RevokeTime}
	return nil
}

// clientWithKeyChange returns a copy of c with the key addJWK added or the key of removeThumbprint
// removed, and its keys by kid; nil when nothing changes.
func clientWithKeyChange(c *issuerv1.Client, addJWK, removeThumbprint string) (*issuerv1.Client, map[string]jose.JSONWebKey, error) {
	cur, err := ParsePublicJWKS(c.GetPublicJwks())
	if err != nil {
		return nil, nil, err
	}
	if addJWK != "" {
		k, _, tp, err := parseClientJWK(addJWK)
		if err != nil {
			return nil, nil, err
		}
		for _, have := range cur {
			if t, _ := KeyThumbprint(have); t == tp {
				return nil, nil, nil
			}
		}
		if _, clash := cur[k.KeyID]; clash {
			return nil, nil, fmt.Errorf("kid %q is already used by another key of the client", k.KeyID)
		}
	}
	if removeThumbprint != "" {
		found := false
		for _, have := range cur {
			if t, _ := KeyThumbprint(have); t == removeThumbprint {
				found = true
			}
		}
		if !found {
			return nil, nil, nil
		}
		if len(cur) <= 1 {
			return nil, nil, errors.New("the client's last key cannot be removed")
		}
	}
	jwks, err := editClientJWKS(c.GetPublicJwks(), addJWK, removeThumbprint)
	if err != nil {
		return nil, nil, err
	}
	keys, err := ParsePublicJWKS(jwks)
	if err != nil {
		return nil, nil, err
	}
	p := cloneClient(c)
	p.PublicJwks = jwks
	return p, keys, nil
}

// loadCurrent folds every event of a client, key changes included; nil if it does not exist.
func (s *Service) loadCurrent(ctx context.Context, tenant, clientID string) (*issuerv1.Client, uint64, error) {
	events, version, err := s.store.Load(ctx, tenant, eventstore.AggregateClient, clientID)
	if err != nil {
		return nil, 0, storeError("load client", err)
	}
	var c *issuerv1.Client
	for _, e := range events {
		switch e.Type {
		case EventClientCreated:
			m, err := eventstore.DecodeAs[*issuerv1.ClientCreated](e)
			if err != nil {
				return nil, 0, errs.Internal(err)
			}
			if c == nil {
				c = m.GetClient()
			}
		case EventClientDisabled:
			if c != nil {
				c.State = issuerv1.ClientState_CLIENT_STATE_DISABLED
			}
		case EventClientTombstoned:
			if c == nil {
				c = tombstone(tenant, clientID, e.Time)
			}
		case EventClientKeyAdded, EventClientKeyRemoved:
			if c == nil {
				continue
			}
			var add, remove string
			if e.Type == EventClientKeyAdded {
				m, err := eventstore.DecodeAs[*issuerv1.ClientKeyAdded](e)
				if err != nil {
					return nil, 0, errs.Internal(err)
				}
				add = m.GetPublicJwk()
			} else {
				m, err := eventstore.DecodeAs[*issuerv1.ClientKeyRemoved](e)
				if err != nil {
					return nil, 0, errs.Internal(err)
				}
				remove = m.GetThumbprint()
			}
			if next, _, err := clientWithKeyChange(c, add, remove); err == nil && next != nil {
				c = next
			}
		}
	}
	return c, version, nil
}

// changeClientKey loads a client, lets decide return the event to append (nil: nothing to do) and
// appends it at the loaded version, retrying on a version conflict. It returns the client as the
// projection shows it afterwards.
func (s *Service) changeClientKey(ctx context.Context, md eventstore.Metadata, tenant, clientID, requestID string, decide func(cur *issuerv1.Client) (string, proto.Message, error)) (*issuerv1.Client, error) {
	if err := checkTenant("name", tenant); err != nil {
		return nil, err
	}
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return nil, err
	}
	md.Tenant = tenant
	name := ClientName(tenant, clientID)
	for range maxAttempts {
		cur, version, err := s.loadCurrent(ctx, tenant, clientID)
		if err != nil {
			return nil, err
		}
		switch {
		case cur == nil:
			return nil, errs.NotFound("CLIENT_NOT_FOUND", fmt.Sprintf("client %q not found", clientID)).WithMetadata("client", name)
		case cur.GetTombstone() || cur.GetState() != issuerv1.ClientState_CLIENT_STATE_ACTIVE:
			return nil, errs.FailedPrecondition("CLIENT_DISABLED", fmt.Sprintf("client %q is disabled", clientID)).WithMetadata("client", name)
		}
		typ, data, err := decide(cur)
		if err != nil {
			return nil, err
		}
		if typ == "" {
			if c, ok := s.state.Client(tenant, clientID); ok {
				return cloneClient(c.Proto), nil
			}
			return cur, nil
		}
		ev, err := s.store.Append(ctx, eventstore.Append{
			Tenant:          tenant,
			AggregateType:   eventstore.AggregateClient,
			AggregateID:     clientID,
			ExpectedVersion: version,
			IdempotencyKey:  requestID,
			Type:            typ,
			Subject:         name,
			Data:            data,
			Metadata:        md,
		})
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, storeError("append "+typ, err)
		}
		s.wait(ctx, ev.Sequence)
		if c, ok := s.state.Client(tenant, clientID); ok {
			return cloneClient(c.Proto), nil
		}
		return cur, nil
	}
	return nil, errs.Conflict("CLIENT_CHANGED", "the client changed concurrently, retry")
}

// AddClientKey adds the public key jwk to a client so that it authenticates with either key. The
// caller names the key by its RFC 7638 thumbprint (read from the registry): a jwk whose thumbprint is
// another is refused, so a key planted in a request cannot pass for the registered one. A key the
// client has (same thumbprint) changes nothing. Idempotent by requestID.
func (s *Service) AddClientKey(ctx context.Context, md eventstore.Metadata, tenant, clientID, jwk, thumbprint, requestID string) (*issuerv1.Client, error) {
	k, canon, tp, err := parseClientJWK(jwk)
	if err != nil {
		return nil, err
	}
	switch {
	case thumbprint == "":
		return nil, errs.InvalidArgument("thumbprint", "the RFC 7638 thumbprint of public_jwk is required")
	case subtle.ConstantTimeCompare([]byte(thumbprint), []byte(tp)) != 1:
		return nil, errs.InvalidArgument("thumbprint", fmt.Sprintf("public_jwk's thumbprint is %s, not the %s named", tp, thumbprint))
	}
	return s.changeClientKey(ctx, md, tenant, clientID, requestID, func(cur *issuerv1.Client) (string, proto.Message, error) {
		have, err := ParsePublicJWKS(cur.GetPublicJwks())
		if err != nil {
			return "", nil, errs.Internal(err)
		}
		for _, h := range have {
			if t, _ := KeyThumbprint(h); t == tp {
				return "", nil, nil
			}
		}
		if _, clash := have[k.KeyID]; clash {
			return "", nil, errs.InvalidArgument("public_jwk", fmt.Sprintf("kid %q is already used by another key of the client", k.KeyID))
		}
		if len(have) >= maxClientKeys {
			return "", nil, errs.InvalidArgument("public_jwk", fmt.Sprintf("the client already has %d keys", len(have)))
		}
		return EventClientKeyAdded, &issuerv1.ClientKeyAdded{Name: cur.GetName(), PublicJwk: canon, Thumbprint: tp}, nil
	})
}

// RemoveClientKey removes the key with thumbprint from a client: assertions signed with it are refused
// from then on. A key the client does not have changes nothing; the last key stays
// (FailedPrecondition). Idempotent by requestID.
func (s *Service) RemoveClientKey(ctx context.Context, md eventstore.Metadata, tenant, clientID, thumbprint, reason, requestID string) (*issuerv1.Client, error) {
	if thumbprint == "" || len(thumbprint) > 64 || strings.ContainsFunc(thumbprint, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, errs.InvalidArgument("thumbprint", "must be an RFC 7638 SHA-256 thumbprint (base64url)")
	}
	if len(reason) > maxReasonLen || !utf8.ValidString(reason) || strings.ContainsRune(reason, 0) {
		return nil, errs.InvalidArgument("reason", fmt.Sprintf("must be valid UTF-8 text of at most %d bytes", maxReasonLen))
	}
	return s.changeClientKey(ctx, md, tenant, clientID, requestID, func(cur *issuerv1.Client) (string, proto.Message, error) {
		have, err := ParsePublicJWKS(cur.GetPublicJwks())
		if err != nil {
			return "", nil, errs.Internal(err)
		}
		for kid, h := range maps.All(have) {
			if t, _ := KeyThumbprint(h); t == thumbprint {
				if len(have) <= 1 {
					return "", nil, errs.FailedPrecondition("LAST_KEY", "the client's only key cannot be removed").
						WithMetadata("client", cur.GetName())
				}
				return EventClientKeyRemoved, &issuerv1.ClientKeyRemoved{Name: cur.GetName(), Kid: kid, Thumbprint: thumbprint, Reason: reason}, nil
			}
		}
		return "", nil, nil
	})
}
