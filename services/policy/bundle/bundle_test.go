package bundle_test

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/agentid/agentid/services/policy/bundle"
	"github.com/agentid/agentid/services/policy/internal/engine"
)

// minRegoTests guards against tests silently disappearing (a renamed package, a parse that drops
// rules): admission_test.rego has at least this many test_ rules.
const minRegoTests = 22

func TestRegoUnitTests(t *testing.T) {
	b, err := engine.LoadFS(bundle.FS)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := b.ParseModules()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := tester.NewRunner().
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		SetModules(mods).
		RunTests(ctx, nil)
	if err != nil {
		t.Fatalf("run rego tests: %v", err)
	}
	ran := 0
	for r := range results {
		ran++
		switch {
		case r.Error != nil:
			t.Errorf("%s.%s: error: %v", r.Package, r.Name, r.Error)
		case r.Skip:
			t.Errorf("%s.%s: skipped; every rego test must run", r.Package, r.Name)
		case r.Fail:
			t.Errorf("%s.%s (%v): FAIL", r.Package, r.Name, r.Location)
		}
	}
	if ran < minRegoTests {
		t.Errorf("ran %d rego tests, want at least %d", ran, minRegoTests)
	}
	t.Logf("%d rego tests ran", ran)
}

func TestDefaultBundleCompiles(t *testing.T) {
	b, err := engine.LoadFS(bundle.FS)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range b.Files() {
		names = append(names, f.Name)
	}
	if len(names) != 2 || names[0] != "admission.rego" || names[1] != "admission_test.rego" {
		t.Errorf("bundle files = %v, want [admission.rego admission_test.rego]", names)
	}
	if _, err := engine.New(context.Background(), b, nil); err != nil {
		t.Fatalf("default bundle does not compile: %v", err)
	}
}
