package eventstore_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// TestEmbeddedServerMaxStore: the storage limit is the one configured, not one taken from the
// disk: the streams' reservations fit a large one whatever the disk's free space, a limit too small
// for them refuses the stream that does not fit, and a negative one is refused at start.
func TestEmbeddedServerMaxStore(t *testing.T) {
	if _, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{StoreDir: t.TempDir(), MaxStore: -1}); err == nil ||
		!strings.Contains(err.Error(), "MaxStore -1 is negative") {
		t.Fatalf("a negative MaxStore: err = %v", err)
	}
	for _, tt := range []struct {
		name     string
		maxStore int64
		wantErr  string
	}{
		{"a limit above every reservation", testkit.TestMaxStore, ""},
		{"a limit below TELEMETRY's reservation", 1 << 30, "insufficient storage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := testkit.StartNATS(t, testkit.WithMaxStore(tt.maxStore))
			err := eventstore.New(n.JetStream(t), eventstore.WithLogger(quiet)).EnsureStreams(t.Context())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("EnsureStreams: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("EnsureStreams: err = %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}
