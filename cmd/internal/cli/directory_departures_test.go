package cli_test

import (
	"strings"
	"testing"
)

// TestDirectorySyncAllowMassDeparture: --allow-mass-departure is sent with --replace and refused
// without it; a plain --replace does not allow a mass departure.
func TestDirectorySyncAllowMassDeparture(t *testing.T) {
	dir := t.TempDir()
	reg := &directoryRegistry{}
	serveRegistry(t, dir, reg)
	path := writeFile(t, dir, "people.csv", "id\nalice@corp.example\n")
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--replace"}, false},
		{[]string{"--replace", "--allow-mass-departure"}, true},
	} {
		if code, _, stderr := run(t, dir, append([]string{"directory", "sync", "-f", path}, tc.args...)...); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", tc.args, code, stderr)
		}
		if got := reg.syncs[len(reg.syncs)-1]; got.GetAllowMassDeparture() != tc.want || !got.GetReplace() {
			t.Fatalf("%v: sent %v", tc.args, got)
		}
	}
	n := len(reg.syncs)
	if code, _, stderr := run(t, dir, "directory", "sync", "-f", path, "--allow-mass-departure"); code == 0 || !strings.Contains(stderr, "only meaningful with --replace") {
		t.Fatalf("without --replace: exit %d, stderr %q", code, stderr)
	}
	if len(reg.syncs) != n {
		t.Fatal("a refused sync was sent")
	}
}
