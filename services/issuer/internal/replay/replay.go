// Package replay remembers used client-assertion ids (jti) in a JetStream key-value bucket shared by
// every issuer replica, so that an assertion is accepted once across the cluster.
package replay

import (
	"context"
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

// DefaultSkewMargin is added to a per-key lifetime (UseUntil) for clock differences between issuer
// replicas and the NATS servers that expire the records.
const DefaultSkewMargin = time.Minute

// limitMarkerTTL is how long the bucket keeps the marker of an expired record (needed for per-key
// lifetimes; markers are not otherwise used).
const limitMarkerTTL = time.Second

// ErrReplayed means the id was already used.
var ErrReplayed = errors.New("replay: assertion already used")

// Config configures a Cache.
type Config struct {
	// TTL is how long ids are remembered; default DefaultTTL.
	TTL time.Duration
	// Replicas of the bucket's stream; default 1 (3 in clusters).
	Replicas int
	// SkewMargin is added to the lifetime of a UseUntil record; default DefaultSkewMargin, negative
	// for none.
	SkewMargin time.Duration
}

// Cache records used ids. It creates its bucket on first use and is safe for concurrent use.
type Cache struct {
	js  jetstream.JetStream
	cfg Config

	mu     sync.Mutex
	kv     jetstream.KeyValue
	keyTTL bool // the bucket supports per-key lifetimes (nats-server 2.11+)
}

// New returns a cache over js.
func New(js jetstream.JetStream, cfg Config) *Cache {
	return &Cache{js: js, cfg: cfg.withDefaults()}
}

// withDefaults returns c with its defaults set.
func (c Config) withDefaults() Config {
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	switch {
	case c.SkewMargin == 0:
		c.SkewMargin = DefaultSkewMargin
	case c.SkewMargin < 0:
		c.SkewMargin = 0
	}
	return c
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
	cfg := jetstream.KeyValueConfig{
		Bucket:         Bucket,
		Description:    "Client assertion ids (jti) already used at the issuer",
		History:        1,
		TTL:            c.cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       c.cfg.Replicas,
		LimitMarkerTTL: limitMarkerTTL,
	}
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, cfg)
	keyTTL := err == nil
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// An older server: every record lives the bucket's TTL.
		cfg.LimitMarkerTTL = 0
		kv, err = c.js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("replay: bucket %s: %w", Bucket, err)
	}
	c.kv, c.keyTTL = kv, keyTTL
	return kv, nil
}

// Key derives the bucket key of an assertion id, scoped to its tenant and client.
func Key(tenant, clientID, jti string) string {
	sum := keyHash(tenant, clientID, jti)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Use records the assertion id for the bucket's TTL, failing with ErrReplayed if it was recorded
// before (by any replica) and has not expired. Any other error means the cache could not be reached:
// the caller must fail closed.
func (c *Cache) Use(ctx context.Context, tenant, clientID, jti string) error {
	return c.create(ctx, tenant, clientID, jti, 0)
}

// UseUntil is Use for an id that is accepted only until until (an assertion's exp plus the leeway):
// the record is kept until then plus a margin for clock skew, at most the bucket's TTL, so the bucket
// holds the ids of the assertions still usable rather than of the last TTL. On a server without
// per-key lifetimes it is Use.
func (c *Cache) UseUntil(ctx context.Context, tenant, clientID, jti string, until time.Time) error {
	ttl := time.Until(until) + c.cfg.SkewMargin
	ttl = min(max(ttl.Round(time.Second)+time.Second, time.Second), c.cfg.TTL)
	return c.create(ctx, tenant, clientID, jti, ttl)
}

func (c *Cache) create(ctx context.Context, tenant, clientID, jti string, ttl time.Duration) error {
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	var opts []jetstream.KVCreateOpt
	if ttl > 0 && ttl < c.cfg.TTL && c.keyTTL {
		opts = append(opts, jetstream.KeyTTL(ttl))
	}
	_, err = kv.Create(ctx, Key(tenant, clientID, jti), []byte{1}, opts...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists):
		return ErrReplayed
	default:
		return fmt.Errorf("replay: record jti: %w", err)
	}
}

// Chain records an id in the bucket (Cache) first and then in the log (Log): an id is accepted only if
// both accept it. It is the store of issuer replicas upgraded from releases that used the bucket
// alone, while such replicas still run: they and the chained replicas meet in the bucket, and the
// chained replicas and the ones on the log alone meet in the log (docs/deploy.md, "Upgrading the issuer's replay store").
type Chain struct {
	Bucket *Cache
	Log    *Log
}

// Ensure creates the bucket and the log's stream.
func (c Chain) Ensure(ctx context.Context) error {
	if err := c.Bucket.Ensure(ctx); err != nil {
		return err
	}
	return c.Log.Ensure(ctx)
}

// Use records the id in the bucket, then in the log.
func (c Chain) Use(ctx context.Context, tenant, clientID, jti string) error {
	if err := c.Bucket.Use(ctx, tenant, clientID, jti); err != nil {
		return err
	}
	return c.Log.Use(ctx, tenant, clientID, jti)
}

// UseUntil records the id in the bucket, then in the log, until until.
func (c Chain) UseUntil(ctx context.Context, tenant, clientID, jti string, until time.Time) error {
	if err := c.Bucket.UseUntil(ctx, tenant, clientID, jti, until); err != nil {
		return err
	}
	return c.Log.UseUntil(ctx, tenant, clientID, jti, until)
}
