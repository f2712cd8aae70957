package cli_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of the validate tests")

// TestValidateReportsEveryProblemAtOnce compares `agentctl validate` over a set with problems in
// several documents and files with its golden output: every problem, file:line: path: rule.
func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	dir := t.TempDir() // no login needed
	code, stdout, stderr := run(t, dir, "validate", "-f", filepath.Join("testdata", "aac", "bad"))
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing on stdout", code, stdout)
	}
	golden := filepath.Join("testdata", "aac", "validate-bad.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(stderr), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stderr != string(want) {
		t.Fatalf("validate printed:\n%s\nwant (%s):\n%s", stderr, golden, want)
	}
}

func TestValidateAcceptsTheExamples(t *testing.T) {
	code, stdout, stderr := run(t, t.TempDir(), "validate", "-f", filepath.Join("..", "..", "..", "examples", "agents-as-code", "acme"))
	if code != 0 || !strings.Contains(stdout, "5 manifest(s) in 3 file(s) are valid") || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, t.TempDir(), "validate", "-o", "json", "-f", filepath.Join("..", "..", "..", "examples", "agents-as-code", "acme"))
	if code != 0 || !strings.Contains(stdout, `"valid": true`) || !strings.Contains(stdout, `"name": "faq-bot-prod"`) {
		t.Fatalf("-o json: exit %d, stdout %q", code, stdout)
	}
}

func TestValidateNeedsManifests(t *testing.T) {
	code, _, stderr := run(t, t.TempDir(), "validate")
	if code != 1 || !strings.Contains(stderr, "give the manifests with -f FILE or -f DIR") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
