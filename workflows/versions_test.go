package workflows_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentid/agentid/workflows"
)

// replayedHistoryFiles are the files TestReplayRecordedHistories replays: every *.json directly in
// testdata/.
func replayedHistoryFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// historyName is how a kept history is named: <workflow>-<path>.json for the newest recording of a
// path, with a release suffix -v<release> for the recordings kept of earlier releases.
var historyName = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*(-v[0-9]+(\.[0-9]+)*)?\.json$`)

// loadHistory reads a recorded history.
func loadHistory(t *testing.T, path string) *historypb.History {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := &historypb.History{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h
}

// versionMarkers are the change ids and versions of the GetVersion markers of h.
func versionMarkers(t *testing.T, h *historypb.History) map[string]workflow.Version {
	t.Helper()
	out := map[string]workflow.Version{}
	for _, ev := range h.GetEvents() {
		m := ev.GetMarkerRecordedEventAttributes()
		if m == nil || m.GetMarkerName() != "Version" {
			continue
		}
		var id string
		var v workflow.Version
		ids, vs := m.GetDetails()["change-id"].GetPayloads(), m.GetDetails()["version"].GetPayloads()
		if len(ids) != 1 || len(vs) != 1 {
			t.Fatalf("version marker %v without change id or version", m)
		}
		if err := json.Unmarshal(ids[0].GetData(), &id); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(vs[0].GetData(), &v); err != nil {
			t.Fatal(err)
		}
		out[id] = v
	}
	return out
}

// workflowNames keeps the names RegisterWorkflows registers.
type workflowNames struct {
	worker.WorkflowRegistry
	names []string
}

func (r *workflowNames) RegisterWorkflowWithOptions(_ any, o workflow.RegisterOptions) {
	r.names = append(r.names, o.Name)
}

// TestEveryHistoryInTestdataIsReplayed fails when testdata/ holds a history that
// TestReplayRecordedHistories would not replay (in a subdirectory, not *.json), one named against the
// convention, one of a workflow that is not registered, or one of a run that had not ended.
func TestEveryHistoryInTestdataIsReplayed(t *testing.T) {
	replayed := replayedHistoryFiles(t)
	var names workflowNames
	workflows.RegisterWorkflows(&names)
	registered := names.names
	closed := []enumspb.EventType{
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
		enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
	}
	n := 0
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == "testdata" {
			return nil
		}
		if d.IsDir() {
			t.Errorf("%s: a directory in testdata/ is not replayed; keep histories directly in testdata/", path)
			return fs.SkipDir
		}
		n++
		if !slices.Contains(replayed, path) {
			t.Errorf("%s is not replayed by TestReplayRecordedHistories (only testdata/*.json are)", path)
			return nil
		}
		if !historyName.MatchString(d.Name()) {
			t.Errorf("%s: name it <workflow>-<path>.json, or <workflow>-<path>-v<release>.json for a kept recording", path)
		}
		h := loadHistory(t, path)
		evs := h.GetEvents()
		if len(evs) < 2 || evs[0].GetWorkflowExecutionStartedEventAttributes() == nil {
			t.Errorf("%s: not a workflow history (no WorkflowExecutionStarted first)", path)
			return nil
		}
		if name := evs[0].GetWorkflowExecutionStartedEventAttributes().GetWorkflowType().GetName(); !slices.Contains(registered, name) {
			t.Errorf("%s: workflow %s is not registered by RegisterWorkflows", path, name)
		}
		if last := evs[len(evs)-1].GetEventType(); !slices.Contains(closed, last) {
			t.Errorf("%s ends with %s: record runs that ended, so the replay covers every command", path, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(replayed) || n == 0 {
		t.Errorf("testdata/ holds %d files, the replay test replays %d", n, len(replayed))
	}
}

// TestChangeIDsNamedInOnePlace checks that every workflow.GetVersion call of the package uses a change
// id constant of versions.go with the maximum version workflows.Changes lists, that Changes lists
// no id twice and none that is not used, and that the histories kept of older versions exist, do not
// carry the change's newest version, and that a history of the newest version is recorded.
func TestChangeIDsNamedInOnePlace(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	pkg := pkgs["workflows"]
	if pkg == nil {
		t.Fatal("package workflows not found")
	}
	// constants of versions.go
	consts := map[string]string{}
	var versionsFile *ast.File
	for name, f := range pkg.Files {
		if filepath.Base(name) == "versions.go" {
			versionsFile = f
		}
	}
	if versionsFile == nil {
		t.Fatal("versions.go not found")
	}
	ast.Inspect(versionsFile, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for i, id := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[id.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
		return true
	})
	used := map[string]workflow.Version{}
	for name, f := range pkg.Files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "GetVersion" || len(call.Args) != 4 {
				return true
			}
			pos := fset.Position(call.Pos())
			ident, ok := call.Args[1].(*ast.Ident)
			if !ok {
				t.Errorf("%s: GetVersion with a change id that is not a constant of versions.go", pos)
				return true
			}
			id, ok := consts[ident.Name]
			if !ok {
				t.Errorf("%s: change id %s is not declared in versions.go", pos, ident.Name)
				return true
			}
			lit, ok := call.Args[3].(*ast.BasicLit)
			if !ok || lit.Kind != token.INT {
				t.Errorf("%s: GetVersion(%s) with a maximum version that is not a literal", pos, id)
				return true
			}
			v, _ := strconv.Atoi(lit.Value)
			if prev, seen := used[id]; seen && prev != workflow.Version(v) {
				t.Errorf("%s: change id %s used with maximum versions %d and %d", filepath.Base(name), id, prev, v)
			}
			used[id] = workflow.Version(v)
			return true
		})
	}

	markers := map[string]map[string]workflow.Version{}
	for _, file := range replayedHistoryFiles(t) {
		markers[filepath.Base(file)] = versionMarkers(t, loadHistory(t, file))
	}
	listed := map[string]bool{}
	for _, c := range workflows.Changes {
		if listed[c.ID] {
			t.Errorf("change id %s is listed twice in Changes", c.ID)
		}
		listed[c.ID] = true
		max, ok := used[c.ID]
		switch {
		case !ok:
			t.Errorf("change id %s is listed in Changes but no GetVersion call uses it", c.ID)
		case max != c.Max:
			t.Errorf("change id %s: GetVersion's maximum is %d, Changes says %d", c.ID, max, c.Max)
		}
		newest := false
		for file, m := range markers {
			if m[c.ID] == c.Max && strings.HasPrefix(file, workflowFilePrefix(c.Workflow)) {
				newest = true
			}
		}
		if !newest {
			t.Errorf("change id %s: no history in testdata/ records version %d", c.ID, c.Max)
		}
		for _, file := range c.Before {
			m, ok := markers[file]
			switch {
			case !ok:
				t.Errorf("change id %s: the history %s of an older version is not in testdata/", c.ID, file)
			case m[c.ID] >= c.Max && m[c.ID] != 0:
				t.Errorf("change id %s: %s records version %d, not an older one", c.ID, file, m[c.ID])
			}
		}
	}
	for id := range used {
		if !listed[id] {
			t.Errorf("change id %s is used by GetVersion but not listed in Changes", id)
		}
	}
}

// workflowFilePrefix is the file name prefix of the histories of a workflow.
func workflowFilePrefix(name string) string {
	switch name {
	case workflows.ProvisionWorkflowName:
		return "provision-"
	case workflows.DeprovisionWorkflowName:
		return "deprovision"
	case workflows.IncidentWorkflowName:
		return "incident-"
	case workflows.TTLWorkflowName:
		return "ttl-"
	case workflows.SweepWorkflowName:
		return "sweep-"
	case workflows.RotationWorkflowName:
		return "rotation-"
	}
	return name
}
