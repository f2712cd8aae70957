// Package replay remembers used client-assertion ids (jti) in a JetStream key-value bucket shared by
// every issuer replica, so that an assertion is accepted once across the cluster.
package replay

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket holding used assertion ids.
const Bucket = "issuer-jti"

// DefaultTTL is how long a used id is remembered: longer than the longest accepted assertion
// lifetime (5 minutes) plus clock-skew leeway.
const DefaultTTL = 10 * time.Minute

// ErrReplayed means the id was already used.
var ErrReplayed = errors.New("replay: assertion already used")

// Config configures a Cache.
type Config struct {
	// TTL is how long ids are remembered; default DefaultTTL.
	TTL time.Duration
	// Replicas of the bucket's stream; default 1 (3 in clusters).
	Replicas int
}

// Cache records used ids. It creates its bucket on first use and is safe for concurrent use.
type Cache struct {
	js  jetstream.JetStream
	cfg Config

	mu sync.Mutex
	kv jetstream.KeyValue
}

// New returns a cache over js.
func New(js jetstream.JetStream, cfg Config) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	return &Cache{js: js, cfg: cfg}
}

// TTL is how long used ids are remembered.
func (c *Cache) TTL() time.Duration { return c.cfg.TTL }

// Ensure creates the bucket, or updates it to the current configuration.
func (c *Cache) Ensure(ctx context.Context) error {
	_, err := c.bucket(ctx)
	return err
}

func (c *Cache) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Client assertion ids (jti) already used at the issuer",
		History:     1,
		TTL:         c.cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    c.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("replay: bucket %s: %w", Bucket, err)
	}
	c.kv = kv
	return kv, nil
}

// Key derives the bucket key of an assertion id, scoped to its tenant and client.
func Key(tenant, clientID, jti string) string {
	h := sha256.New()
	for _, p := range []string{tenant, clientID, jti} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Use records the assertion id, failing with ErrReplayed if it was recorded before (by any replica)
// within the TTL. Any other error means the cache could not be reached: the caller must fail closed.
func (c *Cache) Use(ctx context.Context, tenant, clientID, jti string) error {
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Create(ctx, Key(tenant, clientID, jti), []byte{1})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return ErrReplayed
	default:
		return fmt.Errorf("replay: record jti: %w", err)
	}
}
