package credentials

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// Reasons of the signing-key commands' errors.
const (
	// ReasonRotationInProgress refuses a rotation while the tenant has a NEXT key.
	ReasonRotationInProgress = "SIGNING_KEY_ROTATION_IN_PROGRESS"
	// ReasonKEKUnknown refuses a re-seal of a key sealed with a key-encryption key the issuer lacks.
	ReasonKEKUnknown = "KEK_UNKNOWN"
)

// autoRequestPrefix prefixes the request id of a scheduled rotation (followed by the retiring kid),
// so that replicas rotating at once create one key.
const autoRequestPrefix = "auto-"

// maxTransitions bounds the transitions one AdvanceSigningKeys applies to one tenant.
const maxTransitions = 8

// loadRing reads the tenant's signing-key aggregate: the write model of rotations and re-seals.
// Facts that do not fit the ring are skipped, as the projection skips them.
func (s *Service) loadRing(ctx context.Context, tenant string) (*keys.Ring, uint64, error) {
	evs, version, err := s.store.Load(ctx, tenant, eventstore.AggregateSigningKey, tenant)
	if err != nil {
		return nil, 0, storeError("load signing keys", err)
	}
	r := &keys.Ring{}
	for _, e := range evs {
		if _, err := foldSigningKey(r, e); err != nil {
			if errors.Is(err, keys.ErrRing) {
				s.logger.WarnContext(ctx, "skipping a signing key event that does not fit", "tenant", tenant, "event_id", e.ID, "error", err)
				continue
			}
			return nil, 0, errs.Internal(fmt.Errorf("signing keys of %s: %w", tenant, err))
		}
	}
	return r, version, nil
}

// RotateSigningKey creates the tenant's NEXT signing key: published in the JWKS at once, CURRENT
// after the publish delay (AdvanceSigningKeys). A repeat of requestID returns the key it created;
// while another NEXT key exists it fails with FailedPrecondition SIGNING_KEY_ROTATION_IN_PROGRESS
// and writes nothing.
func (s *Service) RotateSigningKey(ctx context.Context, md eventstore.Metadata, tenant, requestID string) (*issuerv1.SigningKey, error) {
	if err := checkTenant("parent", tenant); err != nil {
		return nil, err
	}
	requestID, err := checkRequestID(requestID)
	if err != nil {
		return nil, err
	}
	md.Tenant = tenant
	for range maxAttempts {
		r, version, err := s.loadRing(ctx, tenant)
		if err != nil {
			return nil, err
		}
		if r.Current() == nil {
			return nil, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
		}
		for _, en := range r.Entries() {
			if en.RequestID == requestID {
				return SigningKeyProto(*en), nil
			}
		}
		if n := r.Next(); n != nil {
			return nil, errs.FailedPrecondition(ReasonRotationInProgress,
				fmt.Sprintf("signing key %s is already NEXT (CURRENT from %s); rotate again after that", n.KeyID, n.ActivateTime.Format(time.RFC3339)))
		}
		key, err := s.appendNext(ctx, md, tenant, requestID, version)
		if errors.Is(err, eventstore.ErrConflict) {
			continue
		}
		return key, err
	}
	return nil, errs.Conflict("SIGNING_KEYS_CHANGED", "the tenant's signing keys changed concurrently, retry")
}

// appendNext generates, seals and appends a NEXT key at version.
func (s *Service) appendNext(ctx context.Context, md eventstore.Metadata, tenant, requestID string, version uint64) (*issuerv1.SigningKey, error) {
	now := s.now().UTC()
	k, priv, err := keys.Generate(now)
	if err != nil {
		return nil, errs.Internal(err)
	}
	sealed, err := s.sealer.Seal(priv, keys.SealAAD(tenant, k.KeyID))
	if err != nil {
		return nil, errs.Internal(err)
	}
	pub, err := k.PublicJSON()
	if err != nil {
		return nil, errs.Internal(err)
	}
	ev, err := s.store.Append(ctx, eventstore.Append{
		Tenant: tenant, AggregateType: eventstore.AggregateSigningKey, AggregateID: tenant,
		ExpectedVersion: version,
		IdempotencyKey:  "signingkey-rotate-" + requestID,
		Type:            EventSigningKeyCreated,
		Subject:         TenantName(tenant),
		Data: &issuerv1.SigningKeyCreated{
			Key:              &issuerv1.SigningKey{KeyId: k.KeyID, Algorithm: string(k.Algorithm), PublicJwk: pub, CreateTime: timestamppb.New(now)},
			SealedPrivateJwk: sealed,
			KekId:            s.sealer.ID(),
			State:            keys.StateNext,
			ActivateAfter:    timestamppb.New(now.Add(s.rotation.PublishDelay)),
			RequestId:        requestID,
		},
		Metadata: md,
	})
	switch {
	case errors.Is(err, eventstore.ErrConflict):
		return nil, err
	case err != nil:
		return nil, storeError("append signing key", err)
	}
	// A repeated append returns the event stored first: answer with its key.
	msg, err := eventstore.DecodeAs[*issuerv1.SigningKeyCreated](ev)
	if err != nil {
		return nil, errs.Internal(err)
	}
	s.logger.InfoContext(ctx, "created NEXT signing key", "tenant", tenant, "kid", msg.GetKey().GetKeyId(),
		"activate_after", msg.GetActivateAfter().AsTime(), "request_id", requestID, "seq", ev.Sequence)
	s.wait(ctx, ev.Sequence)
	return SigningKeyProto(keys.Entry{
		KeyID: msg.GetKey().GetKeyId(), State: keys.StateNext, PublicJWK: msg.GetKey().GetPublicJwk(),
		CreateTime: msg.GetKey().GetCreateTime().AsTime(), ActivateTime: msg.GetActivateAfter().AsTime(), KEKID: msg.GetKekId(),
	}), nil
}

// AdvanceSigningKeys applies the key transitions that are due, for every tenant: a NEXT key whose
// publish delay has passed becomes CURRENT (its predecessor RETIRING), a RETIRING key whose retention
// has passed is removed, and with a rotation interval a CURRENT key that old gets a NEXT successor.
// Every replica may run it at once: each transition is appended once (version check, idempotency
// key) and the others see a conflict and re-read. The state lives in events only, so it resumes
// after a restart of every process.
func (s *Service) AdvanceSigningKeys(ctx context.Context) error {
	var problems []error
	for _, tenant := range s.state.signingKeysDue(s.now().UTC(), s.rotation.Interval) {
		if err := s.advanceTenant(ctx, tenant); err != nil {
			problems = append(problems, fmt.Errorf("signing keys of tenant %s: %w", tenant, err))
		}
	}
	return errors.Join(problems...)
}

func (s *Service) advanceTenant(ctx context.Context, tenant string) error {
	md := serviceMetadata(tenant)
	conflicts := 0
	for range maxTransitions {
		r, version, err := s.loadRing(ctx, tenant)
		if err != nil {
			return err
		}
		now := s.now().UTC()
		var a *eventstore.Append
		switch due := r.Due(now); {
		case len(due) > 0 && due[0].Activate != "":
			t := due[0]
			a = &eventstore.Append{
				IdempotencyKey: "signingkey-activate-" + t.Activate, Type: EventSigningKeyActivated,
				Data: &issuerv1.SigningKeyActivated{
					KeyId: t.Activate, PreviousKeyId: t.Previous, ActivateTime: timestamppb.New(now),
					RemovePreviousAfter: timestamppb.New(now.Add(s.rotation.Retention)),
				},
			}
		case len(due) > 0:
			a = &eventstore.Append{
				IdempotencyKey: "signingkey-remove-" + due[0].Remove, Type: EventSigningKeyRemoved,
				Data: &issuerv1.SigningKeyRemoved{KeyId: due[0].Remove, RemoveTime: timestamppb.New(now)},
			}
		case r.RotationDue(now, s.rotation.Interval):
			_, err = s.appendNext(ctx, md, tenant, autoRequestPrefix+r.Current().KeyID, version)
		default:
			return nil
		}
		if a != nil {
			a.Tenant, a.AggregateType, a.AggregateID, a.Subject = tenant, eventstore.AggregateSigningKey, tenant, TenantName(tenant)
			a.ExpectedVersion, a.Metadata = version, md
			var ev eventstore.Event
			if ev, err = s.store.Append(ctx, *a); err == nil {
				s.logger.InfoContext(ctx, "signing key transition", "tenant", tenant, "type", a.Type, "seq", ev.Sequence)
				s.wait(ctx, ev.Sequence)
			}
		}
		switch {
		case errors.Is(err, eventstore.ErrConflict):
			if conflicts++; conflicts > maxAttempts {
				return errs.Conflict("SIGNING_KEYS_CHANGED", "the tenant's signing keys changed concurrently, retry")
			}
		case err != nil:
			return storeError("append signing key transition", err)
		}
	}
	return nil
}

// ResealSigningKeys seals the private half of every signing key in use of tenant ("" for every
// tenant) with the current key-encryption key, opening it with the key-encryption key it names.
// Keys already sealed with the current one are left alone, so a repeat changes nothing. The answer
// counts the keys in use per key-encryption key afterwards.
func (s *Service) ResealSigningKeys(ctx context.Context, md eventstore.Metadata, tenant string) (*issuerv1.ResealSigningKeysResponse, error) {
	tenants := s.state.SigningKeyTenants()
	if tenant != "" {
		if err := checkTenant("parent", tenant); err != nil {
			return nil, err
		}
		if !slices.Contains(tenants, tenant) {
			return nil, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
		}
		tenants = []string{tenant}
	}
	out := &issuerv1.ResealSigningKeysResponse{KekId: s.sealer.ID()}
	usage := map[string]int32{}
	for _, t := range tenants {
		md.Tenant = t
		resealed, unchanged, ring, err := s.resealTenant(ctx, md, t)
		if err != nil {
			return nil, err
		}
		out.Resealed += resealed
		out.Unchanged += unchanged
		for _, en := range ring.Live() {
			usage[en.KEKID]++
		}
	}
	for _, id := range slices.Sorted(maps.Keys(usage)) {
		out.Keks = append(out.Keks, &issuerv1.KEKUsage{KekId: id, Keys: usage[id]})
	}
	return out, nil
}

// resealTenant re-seals the tenant's keys one event at a time, re-reading after each, and returns the
// ring as it ends.
func (s *Service) resealTenant(ctx context.Context, md eventstore.Metadata, tenant string) (resealed, unchanged int32, ring *keys.Ring, err error) {
	conflicts := 0
	for {
		r, version, err := s.loadRing(ctx, tenant)
		if err != nil {
			return 0, 0, nil, err
		}
		var todo *keys.Entry
		unchanged = 0
		for _, en := range r.Live() {
			if en.KEKID == s.sealer.ID() {
				unchanged++
			} else if todo == nil {
				todo = en
			}
		}
		if todo == nil {
			return resealed, unchanged - resealed, r, nil
		}
		opener, ok := s.openers[todo.KEKID]
		if !ok {
			return 0, 0, nil, errs.FailedPrecondition(ReasonKEKUnknown, fmt.Sprintf(
				"signing key %s of tenant %s is sealed with key-encryption key %q, which this issuer was not given: give it as an old KEK and retry",
				todo.KeyID, tenant, todo.KEKID))
		}
		aad := keys.SealAAD(tenant, todo.KeyID)
		priv, err := opener.Open(todo.Sealed, aad)
		if err != nil {
			return 0, 0, nil, errs.Internal(fmt.Errorf("re-seal signing key %s of tenant %s: %w", todo.KeyID, tenant, err))
		}
		sealed, err := s.sealer.Seal(priv, aad)
		if err != nil {
			return 0, 0, nil, errs.Internal(err)
		}
		ev, err := s.store.Append(ctx, eventstore.Append{
			Tenant: tenant, AggregateType: eventstore.AggregateSigningKey, AggregateID: tenant,
			ExpectedVersion: version,
			IdempotencyKey:  "signingkey-reseal-" + todo.KeyID + "-" + s.sealer.ID(),
			Type:            EventSigningKeyResealed,
			Subject:         TenantName(tenant),
			Data: &issuerv1.SigningKeyResealed{
				KeyId: todo.KeyID, SealedPrivateJwk: sealed, KekId: s.sealer.ID(), PreviousKekId: todo.KEKID,
			},
			Metadata: md,
		})
		switch {
		case errors.Is(err, eventstore.ErrConflict):
			if conflicts++; conflicts > maxAttempts {
				return 0, 0, nil, errs.Conflict("SIGNING_KEYS_CHANGED", "the tenant's signing keys changed concurrently, retry")
			}
			continue
		case err != nil:
			return 0, 0, nil, storeError("append signingkey.resealed", err)
		}
		resealed++
		s.logger.InfoContext(ctx, "re-sealed signing key", "tenant", tenant, "kid", todo.KeyID, "kek_id", s.sealer.ID(), "previous_kek_id", todo.KEKID, "seq", ev.Sequence)
		s.wait(ctx, ev.Sequence)
	}
}
