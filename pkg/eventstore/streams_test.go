package eventstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
)

func TestEnsureStreamsNeverWeakens(t *testing.T) {
	tests := []struct {
		name string
		// raise makes the existing configuration stronger than the default (nil: none).
		raise func(*jetstream.StreamConfig)
		// stream is the stream raise changes.
		stream string
		// opts configure the store whose EnsureStreams runs afterwards.
		opts                 []eventstore.Option
		wantStream           string
		wantSetting          string
		wantExisting, wantRq string
		// check reads the setting back from the stream's configuration.
		check func(jetstream.StreamConfig) string
	}{
		{
			name: "shorter duplicate window", opts: []eventstore.Option{eventstore.WithDuplicateWindow(time.Hour)},
			wantStream: eventstore.StreamTenants, wantSetting: "duplicate window", wantExisting: "24h0m0s", wantRq: "1h0m0s",
			check: func(c jetstream.StreamConfig) string { return c.Duplicates.String() },
		},
		{
			name: "lower max age", stream: eventstore.StreamTelemetry,
			raise:      func(c *jetstream.StreamConfig) { c.MaxAge = 30 * 24 * time.Hour },
			wantStream: eventstore.StreamTelemetry, wantSetting: "max_age", wantExisting: "720h0m0s", wantRq: "168h0m0s",
			check: func(c jetstream.StreamConfig) string { return c.MaxAge.String() },
		},
		{
			name: "limit on an unlimited stream", stream: eventstore.StreamTelemetry,
			raise:      func(c *jetstream.StreamConfig) { c.MaxBytes = -1 },
			wantStream: eventstore.StreamTelemetry, wantSetting: "max_bytes", wantExisting: "unlimited", wantRq: "10737418240",
			check: func(c jetstream.StreamConfig) string {
				if c.MaxBytes <= 0 {
					return "unlimited"
				}
				return "limited"
			},
		},
		{
			name: "shorter history of the failed-event bucket", stream: "KV_" + eventstore.FailedEventsBucket,
			raise:      func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 5 },
			wantStream: "KV_" + eventstore.FailedEventsBucket, wantSetting: "max_msgs_per_subject", wantExisting: "5", wantRq: "1",
			check: func(c jetstream.StreamConfig) string { return fmt.Sprint(c.MaxMsgsPerSubject) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			js := e.store.JetStream()
			stream := cmpOr(tt.stream, tt.wantStream)
			if tt.raise != nil {
				st, err := js.Stream(t.Context(), stream)
				if err != nil {
					t.Fatal(err)
				}
				cfg := st.CachedInfo().Config
				tt.raise(&cfg)
				if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
					t.Fatal(err)
				}
			}
			before := streamConfig(t, js, stream)
			err := eventstore.New(js, append([]eventstore.Option{eventstore.WithLogger(quiet)}, tt.opts...)...).EnsureStreams(t.Context())
			var we *eventstore.WeakerConfigError
			if !errors.As(err, &we) || !errors.Is(err, eventstore.ErrWeakerConfig) {
				t.Fatalf("EnsureStreams = %v, want a WeakerConfigError", err)
			}
			if we.Stream != tt.wantStream || we.Setting != tt.wantSetting || we.Existing != tt.wantExisting || we.Requested != tt.wantRq {
				t.Errorf("error = %+v, want stream %s setting %s existing %s requested %s", *we, tt.wantStream, tt.wantSetting, tt.wantExisting, tt.wantRq)
			}
			for _, part := range []string{tt.wantStream, tt.wantSetting, tt.wantExisting, tt.wantRq} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not name %q", err, part)
				}
			}
			if got, want := tt.check(streamConfig(t, js, stream)), tt.check(before); got != want {
				t.Errorf("stream %s changed: %s, want %s", stream, got, want)
			}
		})
	}
}

func TestEnsureStreamsAppliesStrongerSettingsAndLogsThem(t *testing.T) {
	n := newEnv(t, eventstore.WithDuplicateWindow(time.Hour)).nats
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	s := eventstore.New(n.JetStream(t), eventstore.WithLogger(logger)) // the default, 24h, is stronger
	if err := s.EnsureStreams(t.Context()); err != nil {
		t.Fatalf("EnsureStreams with a longer duplicate window: %v", err)
	}
	if got := streamConfig(t, s.JetStream(), eventstore.StreamAgents).Duplicates; got != eventstore.DefaultDuplicateWindow {
		t.Errorf("duplicate window = %v, want %v", got, eventstore.DefaultDuplicateWindow)
	}
	for _, cfg := range s.Streams() {
		if !strings.Contains(logs.String(), `"msg":"stream configuration","stream":"`+cfg.Name+`"`) {
			t.Errorf("no configuration logged for %s", cfg.Name)
		}
	}
	if !strings.Contains(logs.String(), `"stream":"KV_`+eventstore.FailedEventsBucket+`"`) {
		t.Error("no configuration logged for the failed-event bucket")
	}
	if !strings.Contains(logs.String(), `"duplicate_window":86400000000000`) {
		t.Errorf("logged configuration lacks the effective duplicate window: %s", logs.String())
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
