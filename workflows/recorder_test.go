package workflows_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentid/agentid/pkg/temporaldev"
	"github.com/agentid/agentid/workflows"
)

// startRecorder dials srv as the history recorder and runs a worker of every workflow with acts
// until the test ends.
func startRecorder(t *testing.T, srv *temporaldev.Server, acts *workflows.Activities) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: srv.HostPort(), Namespace: workflows.Namespace, Logger: quietLogger(), Identity: "agentid-recorder"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	w := worker.New(c, workflows.TaskQueue, worker.Options{Identity: "agentid-recorder"})
	workflows.Register(w, acts)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return c
}

// keepHistory checks that run's fresh history replays against the current workflow code and, when
// -record asks for file, writes it to testdata/file.
func keepHistory(t *testing.T, c client.Client, run client.WorkflowRun, file string) {
	t.Helper()
	h := history(t, c, run)
	replayer := worker.NewWorkflowReplayer()
	workflows.RegisterWorkflows(replayer)
	if err := replayer.ReplayWorkflowHistory(quietLogger(), h); err != nil {
		t.Fatalf("%s: the fresh history does not replay: %v", file, err)
	}
	if !recordFile(file) {
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", file), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote testdata/%s (%d events)", file, len(h.GetEvents()))
}

// checkRecorded fails unless a recording test kept exactly the histories it lists, in its order.
func checkRecorded(t *testing.T, files, want []string) {
	t.Helper()
	if !slices.Equal(files, want) {
		t.Fatalf("recorded %v, want %v", files, want)
	}
}
