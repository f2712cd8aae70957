package eventstore_test

import (
	"bytes"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

// A Put deletes the projection's objects that a newer one superseded long ago before it writes its
// own, so that a bucket they filled to its size limit takes a checkpoint again.
func TestObjectCheckpointsPutRecoversAFullBucket(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	const limit = 500 << 10
	body := strings.Repeat("x", 200<<10)
	quiet := eventstore.WithCheckpointLogger(slog.New(slog.DiscardHandler))
	for _, id := range []string{"gone-1", "gone-2"} { // two replicas gone: 400 KiB of the 500
		s := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica(id), eventstore.WithCheckpointBucketBytes(limit), quiet)
		if err := s.Put(t.Context(), "full-v1", strings.NewReader(body)); err != nil {
			t.Fatalf("replica %s: %v", id, err)
		}
	}
	s := eventstore.OpenObjectCheckpoints(js, 1, eventstore.WithCheckpointReplica("new"), eventstore.WithCheckpointBucketBytes(limit), quiet)
	eventstore.SetCheckpointClock(s, func() time.Time { return time.Now().Add(time.Hour) }) // gone-2 superseded gone-1 an hour ago
	if err := s.Put(t.Context(), "full-v1", strings.NewReader(body)); err != nil {
		t.Fatalf("Put into a bucket full of superseded checkpoints: %v", err)
	}
	rc, err := s.Get(t.Context(), "full-v1")
	got := readAll(t, rc, err)
	if !bytes.Equal(got, []byte(body)) {
		t.Fatalf("Get read %d bytes, want the %d just written", len(got), len(body))
	}
}

// A process's default replica id is its host name (-2, -3... for its second and later stores, so
// that none shares an id): a restart writes the same objects again instead of leaving one more per
// restart.
func TestObjectCheckpointsDefaultReplicaIsStable(t *testing.T) {
	js := testkit.StartNATS(t).JetStream(t)
	first := eventstore.OpenObjectCheckpoints(js, 1).Replica()
	second := eventstore.OpenObjectCheckpoints(js, 1).Replica()
	if first == second {
		t.Fatalf("two stores of one process both have the default replica id %q", first)
	}
	host, err := os.Hostname()
	if err != nil || host == "" { // without a host name, a random id
		if !strings.HasPrefix(first, "replica-") || !strings.HasPrefix(second, "replica-") {
			t.Fatalf("default replica ids %q and %q without a host name, want replica-<random>", first, second)
		}
		return
	}
	stable := regexp.MustCompile(`^` + regexp.QuoteMeta(host) + `(-[0-9]+)?$`)
	for _, id := range []string{first, second} {
		if !stable.MatchString(id) {
			t.Errorf("default replica id %q, want the host name %q (with -<n> after a process's first store)", id, host)
		}
	}
}
