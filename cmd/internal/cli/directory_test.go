package cli_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// directoryRegistry records SyncDirectory and TransferAgentOwnership requests and answers
// ListPrincipals from its principals, in pages of two.
type directoryRegistry struct {
	registryv1.UnimplementedRegistryServiceServer
	mu         sync.Mutex
	syncs      []*registryv1.SyncDirectoryRequest
	transfers  []*registryv1.TransferAgentOwnershipRequest
	principals []*registryv1.Principal
}

func (r *directoryRegistry) SyncDirectory(_ context.Context, req *registryv1.SyncDirectoryRequest) (*registryv1.SyncDirectoryResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs = append(r.syncs, req)
	res := &registryv1.SyncDirectoryResponse{Added: int32(len(req.GetPrincipals()))}
	for _, p := range req.GetPrincipals() {
		if p.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED {
			res.Departed = append(res.Departed, p.GetId())
			res.AgentsOrphaned += 2
		}
	}
	return res, nil
}

func (r *directoryRegistry) TransferAgentOwnership(_ context.Context, req *registryv1.TransferAgentOwnershipRequest) (*registryv1.TransferAgentOwnershipResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.transfers = append(r.transfers, req)
	return &registryv1.TransferAgentOwnershipResponse{Agent: &registryv1.Agent{Name: req.GetName(), Owner: req.GetNewOwner(), State: registryv1.AgentState_AGENT_STATE_ACTIVE}}, nil
}

func (r *directoryRegistry) ListPrincipals(_ context.Context, req *registryv1.ListPrincipalsRequest) (*registryv1.ListPrincipalsResponse, error) {
	start := 0
	if req.GetPageToken() != "" {
		fmt.Sscan(req.GetPageToken(), &start)
	}
	end := min(start+2, len(r.principals))
	res := &registryv1.ListPrincipalsResponse{Principals: r.principals[start:end]}
	if end < len(r.principals) {
		res.NextPageToken = fmt.Sprint(end)
	}
	return res, nil
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDirectorySyncReadsCSVAndJSON(t *testing.T) {
	dir := t.TempDir()
	reg := &directoryRegistry{}
	serveRegistry(t, dir, reg)
	want := []*registryv1.Principal{
		{Id: "alice@corp.example", DisplayName: "Alice", Kind: registryv1.PrincipalKind_PRINCIPAL_KIND_PERSON},
		{Id: "team:payments", DisplayName: "Payments, EMEA"},
		{Id: "bob@corp.example", Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED},
	}
	files := map[string]string{
		"people.csv": "\ufeffid,kind,display_name,status\nalice@corp.example,person,Alice,\nteam:payments,,\"Payments, EMEA\",active\nbob@corp.example,,,Departed\n",
		"people.json": `[{"id":"alice@corp.example","kind":"person","display_name":"Alice"},{"id":"team:payments","display_name":"Payments, EMEA","status":"active"},
			{"id":"bob@corp.example","status":"departed"}]`,
		"wrapped.json": `{"principals":[{"id":"alice@corp.example","kind":"PERSON","display_name":"Alice"},{"id":"team:payments","display_name":"Payments, EMEA"},{"id":"bob@corp.example","status":"departed"}]}`,
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, dir, name, content)
			code, stdout, stderr := run(t, dir, "directory", "sync", "-f", path, "--replace", "--request-id", "hr-1")
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			got := reg.syncs[len(reg.syncs)-1]
			if got.GetParent() != "tenants/default" || !got.GetReplace() || got.GetRequestId() != "hr-1" || len(got.GetPrincipals()) != len(want) {
				t.Fatalf("sent %v", got)
			}
			for i, p := range got.GetPrincipals() {
				w := proto.Clone(want[i]).(*registryv1.Principal)
				if p.GetId() == "team:payments" && p.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
					w.Status = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
				}
				if !proto.Equal(p, w) {
					t.Fatalf("principal %d: sent %v, want %v", i, p, w)
				}
			}
			if !strings.Contains(stdout, "bob@corp.example") || !strings.Contains(stdout, "2") {
				t.Fatalf("stdout %q does not show the departure and the orphaned agents", stdout)
			}
		})
	}
}

func TestDirectorySyncRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	reg := &directoryRegistry{}
	serveRegistry(t, dir, reg)
	for _, tc := range []struct {
		name, file, content, want string
		args                      []string
	}{
		{"unknown column", "a.csv", "id,email\nx,y\n", `unknown column "email"`, nil},
		{"no id column", "b.csv", "kind,status\nperson,active\n", "no id column", nil},
		{"empty id", "c.csv", "id,kind\nalice@x,person\n,team\n", "line 3: id is required", nil},
		{"bad kind", "d.csv", "id,kind\nalice@x,robot\n", `line 2: kind "robot" is neither person nor team`, nil},
		{"bad status", "e.json", `[{"id":"a@x","status":"gone"}]`, `principal 1: status "gone" is neither active nor departed`, nil},
		{"unknown JSON field", "f.json", `[{"id":"a@x","email":"a@x"}]`, `unknown field "email"`, nil},
		{"wrong extension", "g.yaml", "- id: a@x\n", "want a .csv or .json file", nil},
		{"empty merge", "h.csv", "id\n", "no principals", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, tc.file, tc.content)
			code, _, stderr := run(t, dir, append([]string{"directory", "sync", "-f", path}, tc.args...)...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want it to say %q", code, stderr, tc.want)
			}
		})
	}
	if len(reg.syncs) != 0 {
		t.Fatalf("bad files were sent: %v", reg.syncs)
	}
	code, _, stderr := run(t, dir, "directory", "sync")
	if code == 0 || !strings.Contains(stderr, "-f is required") {
		t.Fatalf("without -f: exit %d, stderr %q", code, stderr)
	}
}

func TestDirectorySyncSplitsLargeMerges(t *testing.T) {
	dir := t.TempDir()
	reg := &directoryRegistry{}
	serveRegistry(t, dir, reg)
	var b strings.Builder
	b.WriteString("id\n")
	for i := range 25_000 {
		fmt.Fprintf(&b, "p%05d@corp.example\n", i)
	}
	path := writeFile(t, dir, "big.csv", b.String())
	if code, _, stderr := run(t, dir, "directory", "sync", "-f", path, "--replace"); code == 0 || !strings.Contains(stderr, "at most 10000") {
		t.Fatalf("replace of 25,000: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr := run(t, dir, "directory", "sync", "-f", path, "--request-id", "big")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if len(reg.syncs) != 3 || len(reg.syncs[0].GetPrincipals()) != 10_000 || len(reg.syncs[2].GetPrincipals()) != 5_000 ||
		reg.syncs[0].GetRequestId() != "big-1" || reg.syncs[2].GetRequestId() != "big-3" {
		t.Fatalf("sent %d requests", len(reg.syncs))
	}
}

func TestDirectoryListAndAgentsTransfer(t *testing.T) {
	dir := t.TempDir()
	reg := &directoryRegistry{principals: []*registryv1.Principal{
		{Id: "alice@corp.example", Kind: registryv1.PrincipalKind_PRINCIPAL_KIND_PERSON, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE},
		{Id: "bob@corp.example", Kind: registryv1.PrincipalKind_PRINCIPAL_KIND_PERSON, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED},
		{Id: "team:payments", Kind: registryv1.PrincipalKind_PRINCIPAL_KIND_TEAM, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE},
	}}
	serveRegistry(t, dir, reg)
	code, stdout, stderr := run(t, dir, "directory", "list")
	if code != 0 || !strings.Contains(stdout, "bob@corp.example") || !strings.Contains(stdout, "departed") || !strings.Contains(stdout, "team:payments") {
		t.Fatalf("list: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := run(t, dir, "directory", "list", "--status", "gone"); code == 0 || !strings.Contains(stderr, "--status") {
		t.Fatalf("bad status: exit %d, stderr %q", code, stderr)
	}

	code, stdout, stderr = run(t, dir, "agents", "transfer", agentArg, "--owner", "team:payments", "--sponsor", "alice@corp.example", "--reason", "bob left", "--request-id", "t-1")
	if code != 0 {
		t.Fatalf("transfer: exit %d, stderr %q", code, stderr)
	}
	want := &registryv1.TransferAgentOwnershipRequest{Name: "tenants/default/agents/" + agentArg, NewOwner: "team:payments", NewSponsor: "alice@corp.example", Reason: "bob left", RequestId: "t-1"}
	if got := reg.transfers[len(reg.transfers)-1]; !proto.Equal(got, want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	if !strings.Contains(stdout, "tenants/default/agents/"+agentArg) {
		t.Fatalf("stdout %q", stdout)
	}
	for _, args := range [][]string{
		{"agents", "transfer", agentArg, "--reason", "r"},
		{"agents", "transfer", agentArg, "--owner", "x@y"},
	} {
		if code, _, stderr := run(t, dir, args...); code == 0 || !strings.Contains(stderr, "required") {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if len(reg.transfers) != 1 {
		t.Fatalf("refused transfers were sent: %d", len(reg.transfers))
	}
}
