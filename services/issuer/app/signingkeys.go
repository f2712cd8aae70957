package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/internal/credentials"
	"github.com/agentid/agentid/services/issuer/internal/keys"
)

// DefaultSigningKeyCheckInterval is how often a replica applies due signing-key transitions by default.
const DefaultSigningKeyCheckInterval = 10 * time.Second

// DefaultKEKID is the id of a key-encryption key given without one: "sha256:" and the first 16 hex
// digits of the key's SHA-256.
func DefaultKEKID(kek []byte) string {
	sum := sha256.Sum256(kek)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// sealers returns the sealer of the current key-encryption key and those of the old ones.
func sealers(cfg Config) (*keys.Sealer, []*keys.Sealer, error) {
	current, err := keys.NewSealer(cfg.KEKID, cfg.KEK)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer: %w", err)
	}
	seen := map[string]bool{cfg.KEKID: true}
	old := make([]*keys.Sealer, 0, len(cfg.OldKEKs))
	for _, k := range cfg.OldKEKs {
		if k.ID == "" {
			k.ID = DefaultKEKID(k.Key)
		}
		if seen[k.ID] {
			return nil, nil, fmt.Errorf("issuer: key-encryption key id %q given twice", k.ID)
		}
		seen[k.ID] = true
		s, err := keys.NewSealer(k.ID, k.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("issuer: old KEK %s: %w", k.ID, err)
		}
		old = append(old, s)
	}
	return current, old, nil
}

// runSigningKeyRotation applies the due signing-key transitions (activation of a NEXT key after its
// publish delay, removal of a RETIRING key after its retention, scheduled rotations) every
// SigningKeyCheckInterval, once the issuer is ready. Every replica runs it; the event store's version
// check lets one of them write each transition. The due times are in the events, so the schedule
// resumes after a restart.
func (a *App) runSigningKeyRotation(ctx context.Context) error {
	if err := a.Ready(ctx); err != nil {
		return nil // shutting down
	}
	t := time.NewTicker(a.cfg.SigningKeyCheckInterval)
	defer t.Stop()
	for {
		if err := a.svc.AdvanceSigningKeys(ctx); err != nil && ctx.Err() == nil {
			a.logger.WarnContext(ctx, "signing key transitions not applied; retrying", "retry_in", a.cfg.SigningKeyCheckInterval.String(), "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RotateSigningKey creates tenant's NEXT signing key as the issuer itself (operators use the
// RotateSigningKey RPC).
func (a *App) RotateSigningKey(ctx context.Context, tenant, requestID string) (*issuerv1.SigningKey, error) {
	md := eventstore.Metadata{Actor: eventstore.Actor{ID: credentials.ServiceActor, Kind: eventstore.ActorService}}
	return a.svc.RotateSigningKey(ctx, md, tenant, requestID)
}

// SigningKeys lists tenant's signing keys with their states and dates, newest first.
func (a *App) SigningKeys(tenant string) ([]*issuerv1.SigningKey, error) {
	return a.svc.ListSigningKeys(tenant)
}
