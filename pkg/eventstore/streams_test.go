package eventstore_test

import (
	"bytes"
	"errors"
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
	// An explicitly longer window is applied.
	s := eventstore.New(n.JetStream(t), eventstore.WithLogger(logger), eventstore.WithDuplicateWindow(eventstore.DefaultDuplicateWindow))
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

// TestEnsureStreamsKeepsSettingsWithoutAnOption: an operator's value of a setting the services
// have no option for is kept, higher or lower than the built-in one, with a warning.
func TestEnsureStreamsKeepsSettingsWithoutAnOption(t *testing.T) {
	tests := []struct {
		name, stream, setting, existing, builtIn string
		change                                   func(*jetstream.StreamConfig)
		check                                    func(jetstream.StreamConfig) bool
	}{
		{
			name: "raised telemetry max bytes", stream: eventstore.StreamTelemetry, setting: "max_bytes",
			existing: "21474836480", builtIn: "10737418240",
			change: func(c *jetstream.StreamConfig) { c.MaxBytes = 20 << 30 },
			check:  func(c jetstream.StreamConfig) bool { return c.MaxBytes == 20<<30 },
		},
		{
			name: "lowered telemetry max age", stream: eventstore.StreamTelemetry, setting: "max_age",
			existing: "24h0m0s", builtIn: "168h0m0s",
			change: func(c *jetstream.StreamConfig) { c.MaxAge = 24 * time.Hour },
			check:  func(c jetstream.StreamConfig) bool { return c.MaxAge == 24*time.Hour },
		},
		{
			name: "unlimited alerts", stream: eventstore.StreamAlerts, setting: "max_age",
			existing: "unlimited", builtIn: "720h0m0s",
			change: func(c *jetstream.StreamConfig) { c.MaxAge = 0 },
			check:  func(c jetstream.StreamConfig) bool { return c.MaxAge == 0 },
		},
		{
			name: "longer history of the failed-event bucket", stream: "KV_" + eventstore.FailedEventsBucket, setting: "max_msgs_per_subject",
			existing: "5", builtIn: "1",
			change: func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 5 },
			check:  func(c jetstream.StreamConfig) bool { return c.MaxMsgsPerSubject == 5 },
		},
		{
			name: "default duplicate window kept", stream: eventstore.StreamAgents, setting: "duplicate window",
			existing: "48h0m0s", builtIn: "24h0m0s",
			change: func(c *jetstream.StreamConfig) { c.Duplicates = 48 * time.Hour },
			check:  func(c jetstream.StreamConfig) bool { return c.Duplicates == 48*time.Hour },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			js := e.store.JetStream()
			cfg := streamConfig(t, js, tt.stream)
			tt.change(&cfg)
			if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			s := eventstore.New(js, eventstore.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
			for range 2 { // every start
				if err := s.EnsureStreams(t.Context()); err != nil {
					t.Fatalf("EnsureStreams: %v", err)
				}
			}
			if got := streamConfig(t, js, tt.stream); !tt.check(got) {
				t.Errorf("%s of %s changed: %+v", tt.setting, tt.stream, got)
			}
			want := `"stream":"` + tt.stream + `","setting":"` + tt.setting + `","existing":"` + tt.existing + `","built_in":"` + tt.builtIn + `"`
			if !strings.Contains(logs.String(), want) {
				t.Errorf("no warning %s in %s", want, logs.String())
			}
		})
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
