package natsauth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
)

// The admin's EnsureStreams creates the CHECKPOINTS bucket (startBus), with its size limit. The
// registry keeps its checkpoints there (replacing one purges the old chunks, and it may delete
// objects) but may not create or update the bucket's stream: an update could add sources or
// subjects and so capture streams it is denied. It reads the activity events of TELEMETRY, which
// the monitor publishes; no other identity may use the bucket, purge another stream or publish
// activity.
func TestCheckpointsAndActivity(t *testing.T) {
	b := startBus(t)
	ctx := t.Context()
	admin := b.connect(t, string(natsauth.Admin))
	bucket, err := admin.js.Stream(ctx, "OBJ_CHECKPOINTS")
	if err != nil {
		t.Fatalf("the admin's EnsureStreams did not create the checkpoint bucket: %v", err)
	}
	if got := bucket.CachedInfo().Config.MaxBytes; got != eventstore.DefaultCheckpointBucketBytes {
		t.Fatalf("checkpoint bucket max bytes %d, want %d", got, eventstore.DefaultCheckpointBucketBytes)
	}
	reg := b.connect(t, string(natsauth.Registry))
	store := eventstore.OpenObjectCheckpoints(reg.js, 1)
	for _, body := range []string{"first", strings.Repeat("second ", 100_000)} { // the second replaces (purges) the first
		if err := store.Put(ctx, "registry-agents-v3", strings.NewReader(body)); err != nil {
			t.Fatalf("registry puts a checkpoint: %v", err)
		}
		rc, err := store.Get(ctx, "registry-agents-v3")
		if err != nil {
			t.Fatalf("registry gets its checkpoint: %v", err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != body {
			t.Fatalf("registry reads back %d bytes (%v), want %d", len(got), err, len(body))
		}
	}
	// It deletes objects (those of replicas gone).
	obs, err := reg.js.ObjectStore(ctx, eventstore.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutString(ctx, "registry-agents-v3@gone", "old"); err != nil {
		t.Fatalf("registry puts an object: %v", err)
	}
	if err := obs.Delete(ctx, "registry-agents-v3@gone"); err != nil {
		t.Fatalf("registry deletes an object: %v", err)
	}
	if _, err := obs.GetInfo(ctx, "registry-agents-v3@gone"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("the deleted object: %v, want ErrObjectNotFound", err)
	}
	mon := b.connect(t, string(natsauth.Monitor))
	if _, err := mon.js.Publish(ctx, "telemetry.acme.agent.active", []byte("x")); err != nil {
		t.Fatalf("monitor publishes activity: %v", err)
	}
	cons, err := reg.js.OrderedConsumer(ctx, eventstore.StreamTelemetry, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.*.agent.active"}})
	if err != nil {
		t.Fatalf("registry reads activity: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(testkit.DefaultWait))
	if err != nil || msg.Subject() != "telemetry.acme.agent.active" {
		t.Fatalf("registry reads the activity event: %v", err)
	}
	for _, c := range []*client{reg, mon} {
		c.mu.Lock()
		for _, v := range c.violations {
			// Ordered consumers delete theirs when they end; no identity may (their inactivity
			// threshold removes them).
			if !strings.Contains(v, "CONSUMER.DELETE."+eventstore.StreamTelemetry+".") {
				t.Errorf("permission violation: %s", v)
			}
		}
		c.mu.Unlock()
	}

	tests := []struct {
		name    string
		id      natsauth.Identity
		subject string
		op      func(ctx context.Context, c *client) error
	}{
		{"registry reads token telemetry", natsauth.Registry, "$JS.API.CONSUMER.CREATE.TELEMETRY.*.telemetry.*.token.requested", nil},
		{"registry purges TELEMETRY", natsauth.Registry, "$JS.API.STREAM.PURGE." + eventstore.StreamTelemetry, nil},
		{"registry purges AGENTS", natsauth.Registry, "$JS.API.STREAM.PURGE." + eventstore.StreamAgents, nil},
		{"registry deletes its bucket", natsauth.Registry, "$JS.API.STREAM.DELETE.OBJ_CHECKPOINTS", nil},
		{"registry creates the bucket's stream", natsauth.Registry, "$JS.API.STREAM.CREATE.OBJ_CHECKPOINTS", func(ctx context.Context, c *client) error {
			_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "OBJ_CHECKPOINTS", Subjects: []string{"$O.CHECKPOINTS.>"}})
			return err
		}},
		{"registry sources AGENTS into the bucket", natsauth.Registry, "$JS.API.STREAM.UPDATE.OBJ_CHECKPOINTS", func(ctx context.Context, c *client) error {
			cfg := bucket.CachedInfo().Config
			cfg.Sources = []*jetstream.StreamSource{{Name: eventstore.StreamAgents}}
			_, err := c.js.UpdateStream(ctx, cfg)
			return err
		}},
		{"registry adds subjects to the bucket", natsauth.Registry, "$JS.API.STREAM.UPDATE.OBJ_CHECKPOINTS", func(ctx context.Context, c *client) error {
			cfg := bucket.CachedInfo().Config
			cfg.Subjects = append(cfg.Subjects, "agentid.>")
			_, err := c.js.UpdateStream(ctx, cfg)
			return err
		}},
		{"issuer publishes activity", natsauth.Issuer, "telemetry.acme.agent.active", func(ctx context.Context, c *client) error {
			_, err := c.js.Publish(ctx, "telemetry.acme.agent.active", []byte("forged"))
			return err
		}},
	}
	// The operator sees the bucket's stream (configuration and state) like every other stream, and
	// none of its content.
	if info, err := admin.js.Stream(ctx, "OBJ_CHECKPOINTS"); err != nil || info.CachedInfo().State.Msgs == 0 {
		t.Fatalf("admin reads the checkpoint stream's information: %v", err)
	}
	tests = append(tests,
		struct {
			name    string
			id      natsauth.Identity
			subject string
			op      func(ctx context.Context, c *client) error
		}{"admin reads checkpoint content", natsauth.Admin, "$JS.API.CONSUMER.CREATE.OBJ_CHECKPOINTS", nil},
		struct {
			name    string
			id      natsauth.Identity
			subject string
			op      func(ctx context.Context, c *client) error
		}{"admin gets a checkpoint chunk", natsauth.Admin, "$JS.API.DIRECT.GET.OBJ_CHECKPOINTS", nil})
	for _, id := range natsauth.PlatformIdentities {
		if id == natsauth.Registry {
			continue
		}
		if id != natsauth.Admin {
			tests = append(tests, struct {
				name    string
				id      natsauth.Identity
				subject string
				op      func(ctx context.Context, c *client) error
			}{string(id) + " reads checkpoints", id, "$JS.API.STREAM.INFO.OBJ_CHECKPOINTS", func(ctx context.Context, c *client) error {
				_, err := eventstore.NewObjectCheckpoints(ctx, c.js, 1)
				return err
			}})
		}
		tests = append(tests,
			struct {
				name    string
				id      natsauth.Identity
				subject string
				op      func(ctx context.Context, c *client) error
			}{string(id) + " writes a checkpoint", id, "$O.CHECKPOINTS.M.forged", func(ctx context.Context, c *client) error {
				_, err := c.js.Publish(ctx, "$O.CHECKPOINTS.M.forged", []byte("{}"))
				return err
			}},
			struct {
				name    string
				id      natsauth.Identity
				subject string
				op      func(ctx context.Context, c *client) error
			}{string(id) + " purges checkpoints", id, "$JS.API.STREAM.PURGE.OBJ_CHECKPOINTS", nil},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := b.connect(t, string(tt.id))
			op := tt.op
			if op == nil {
				op = func(ctx context.Context, c *client) error {
					_, err := c.nc.RequestWithContext(ctx, tt.subject, nil)
					return err
				}
			}
			c.denied(t, tt.name, tt.subject, func(ctx context.Context) error { return op(ctx, c) })
		})
	}
	// The bucket's stream is as the admin made it.
	if st, err := admin.js.Stream(ctx, "OBJ_CHECKPOINTS"); err != nil || len(st.CachedInfo().Config.Sources) != 0 || len(st.CachedInfo().Config.Subjects) != 2 {
		t.Fatalf("checkpoint bucket after the refused updates: %+v (%v)", st.CachedInfo().Config, err)
	}
	// The registry's checkpoint is still there.
	rc, err := store.Get(ctx, "registry-agents-v3")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.HasPrefix(got, []byte("second")) {
		t.Fatalf("the checkpoint changed: %.20q", got)
	}
}
