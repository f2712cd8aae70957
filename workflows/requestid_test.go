package workflows_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/workflows"
)

// TestBoundedRequestID: ids the services accept pass unchanged; longer ones (a rotation's: workflow
// id and two thumbprints) become at most MaxRequestID characters, the same for the same id and
// different for different ids.
func TestBoundedRequestID(t *testing.T) {
	thumb := strings.Repeat("T", 43)
	wf := workflows.RotationWorkflowID("default", "agt_2refe0bjw012k8km2bbn3meeds", thumb)
	long := wf + "/remove-" + strings.Repeat("O", 43) + "-client"
	other := wf + "/remove-" + strings.Repeat("P", 43) + "-client"
	if len(long) <= workflows.MaxRequestID {
		t.Fatalf("test id of %d characters is not too long", len(long))
	}
	short := wf + "/add-client-key"
	if got := workflows.BoundedRequestID(short); got != short {
		t.Errorf("a short id changed: %q", got)
	}
	got := workflows.BoundedRequestID(long)
	if len(got) > workflows.MaxRequestID || got != workflows.BoundedRequestID(long) || !strings.HasPrefix(got, long[:64]) {
		t.Errorf("BoundedRequestID(long) = %q (%d characters), want a stable id of at most %d", got, len(got), workflows.MaxRequestID)
	}
	if workflows.BoundedRequestID(other) == got {
		t.Error("two long ids that differ after 64 characters got the same bounded id")
	}
	if strings.ContainsAny(got, " \t\r\n") {
		t.Errorf("bounded id %q has whitespace, which the registry refuses", got)
	}
}
