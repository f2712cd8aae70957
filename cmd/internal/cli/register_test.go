package cli_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/names"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// flakyRegistry answers RegisterAgent with the next of its scripted errors (nil: success), and
// remembers every request.
type flakyRegistry struct {
	registryv1.UnimplementedRegistryServiceServer
	mu       sync.Mutex
	script   []error
	requests []*registryv1.RegisterAgentRequest
}

func (r *flakyRegistry) RegisterAgent(_ context.Context, req *registryv1.RegisterAgentRequest) (*registryv1.RegisterAgentResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req)
	if len(r.script) > 0 {
		err := r.script[0]
		r.script = r.script[1:]
		if err != nil {
			return nil, err
		}
	}
	id := names.DeriveAgentID("default", req.GetRequestId())
	a := &registryv1.Agent{Name: "tenants/default/agents/" + id, AgentId: id, PublicJwks: req.GetAgent().GetPublicJwks(),
		State: registryv1.AgentState_AGENT_STATE_PENDING}
	return &registryv1.RegisterAgentResponse{Agent: a}, nil
}

// sent returns the requests received so far.
func (r *flakyRegistry) sent() []*registryv1.RegisterAgentRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*registryv1.RegisterAgentRequest(nil), r.requests...)
}

// serveRegistry runs reg on a loopback gRPC server and a token endpoint for the session, and writes a
// session pointing at both into dir.
func serveRegistry(t *testing.T, dir string, reg registryv1.RegistryServiceServer) {
	t.Helper()
	serveServices(t, dir, func(srv *grpc.Server) { registryv1.RegisterRegistryServiceServer(srv, reg) })
}

// serveServices runs the services register adds on a loopback gRPC server and a token endpoint for
// the session, and writes a session pointing at both into dir.
func serveServices(t *testing.T, dir string, register func(*grpc.Server)) {
	t.Helper()
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"test-token","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(tokens.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	cred, err := authn.NewCredential("system", "bootstrap-admin", tokens.URL+"/t/system")
	if err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(dir, "admin.json")
	if err := authn.WriteCredentialFile(credPath, cred); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{"server": lis.Addr().String(), "tenant": "default", "credential_file": credPath})
	if err := os.WriteFile(filepath.Join(dir, "session.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

var registerArgs = []string{"agents", "register", "--display-name", "FAQ bot", "--owner", "team:support",
	"--sponsor", "alice@corp.example", "--purpose", "answers questions", "--scope", "faq.read"}

func TestRegisterWithUnknownOutcomeKeepsTheKeyAndNamesTheRequestID(t *testing.T) {
	dir := t.TempDir()
	reg := &flakyRegistry{script: []error{status.Error(codes.Unavailable, "registry restarting")}}
	serveRegistry(t, dir, reg)
	keyFile := filepath.Join(dir, "bot.json")

	code, stdout, stderr := run(t, dir, append(registerArgs, "--key-out", keyFile)...)
	if code != 1 || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want a failure", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "the outcome of the registration is unknown") || !strings.Contains(stderr, "Unavailable") {
		t.Fatalf("stderr %q does not say the outcome is unknown", stderr)
	}
	first := reg.sent()[0].GetRequestId()
	if first == "" || !strings.Contains(stderr, "--request-id "+first) || !strings.Contains(stderr, "--key-out "+keyFile) {
		t.Fatalf("stderr %q does not name the request id %q and the key file to retry with", stderr, first)
	}
	// The key was on disk before the registry was asked, under the id the registration gets.
	cred, err := authn.LoadCredentialFile(keyFile)
	if err != nil {
		t.Fatalf("the key of a registration with an unknown outcome is gone: %v", err)
	}
	if want := names.DeriveAgentID("default", first); cred.ClientID != want {
		t.Fatalf("key file client_id %q, want the derived agent id %q", cred.ClientID, want)
	}
	jwks, _ := cred.PublicJWKS()
	if reg.sent()[0].GetAgent().GetPublicJwks() != string(jwks) {
		t.Fatal("the registry was sent another key than the one written")
	}

	// The retry the message asks for reuses the key and registers the same agent.
	code, stdout, stderr = run(t, dir, append(registerArgs, "--key-out", keyFile, "--request-id", first, "-o", "json")...)
	if code != 0 {
		t.Fatalf("retry: exit %d, stderr %q", code, stderr)
	}
	if sent := reg.sent(); len(sent) != 2 || sent[1].GetRequestId() != first ||
		sent[1].GetAgent().GetPublicJwks() != sent[0].GetAgent().GetPublicJwks() {
		t.Fatalf("the retry did not resend request %s with the same key", first)
	}
	if !strings.Contains(stdout, cred.ClientID) {
		t.Fatalf("retry printed %q, want agent %s", stdout, cred.ClientID)
	}
	again, err := authn.LoadCredentialFile(keyFile)
	if err != nil || again.ClientID != cred.ClientID {
		t.Fatalf("key file after the retry: %v %+v", err, again)
	}
}

func TestRegisterRefusedLeavesNoKey(t *testing.T) {
	dir := t.TempDir()
	reg := &flakyRegistry{script: []error{status.Error(codes.InvalidArgument, "purpose: is required")}}
	serveRegistry(t, dir, reg)
	keyFile := filepath.Join(dir, "bot.json")
	code, _, stderr := run(t, dir, append(registerArgs, "--key-out", keyFile)...)
	if code != 1 || !strings.Contains(stderr, "InvalidArgument") || strings.Contains(stderr, "unknown") {
		t.Fatalf("exit %d, stderr %q; want the refusal as it is", code, stderr)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Fatalf("a refused registration left its key file behind: %v", err)
	}
}

func TestRegisterNeverOverwritesAnotherKey(t *testing.T) {
	dir := t.TempDir()
	reg := &flakyRegistry{}
	serveRegistry(t, dir, reg)
	keyFile := filepath.Join(dir, "bot.json")
	if code, _, stderr := run(t, dir, append(registerArgs, "--key-out", keyFile, "--request-id", "req-1")...); code != 0 {
		t.Fatalf("first registration: %s", stderr)
	}
	before, _ := os.ReadFile(keyFile)
	// Another request id with the same file: refused, the file untouched, nothing sent.
	code, _, stderr := run(t, dir, append(registerArgs, "--key-out", keyFile, "--request-id", "req-2")...)
	if code != 1 || !strings.Contains(stderr, "refusing to overwrite a key") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	after, _ := os.ReadFile(keyFile)
	if string(before) != string(after) || len(reg.sent()) != 1 {
		t.Fatalf("the key file changed or a second registration was sent (%d requests)", len(reg.sent()))
	}
}

// TestRegisterNeverReusesAPlantedKey: a key file is reused only for an explicit retry (--request-id)
// and only when it is a private regular file; a symbolic link planted at the path is refused and
// nothing is sent.
func TestRegisterNeverReusesAPlantedKey(t *testing.T) {
	dir := t.TempDir()
	reg := &flakyRegistry{}
	serveRegistry(t, dir, reg)
	// A planted credential of the very agent a retry of req-9 registers, behind a symbolic link.
	planted, err := authn.NewCredential("default", names.DeriveAgentID("default", "req-9"), "http://127.0.0.1:1/t/default")
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "planted.json")
	if err := authn.WriteCredentialFile(target, planted); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "bot.json")
	if err := os.Symlink(target, keyFile); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, dir, append(registerArgs, "--key-out", keyFile, "--request-id", "req-9")...)
	if code != 1 || !strings.Contains(stderr, "not a regular file") {
		t.Fatalf("exit %d, stderr %q; want the symbolic link refused", code, stderr)
	}
	// Without --request-id an existing file is never reused, whatever it holds.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(target, keyFile); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, dir, append(registerArgs, "--key-out", keyFile)...)
	if code != 1 || !strings.Contains(stderr, "refusing to overwrite a key") {
		t.Fatalf("exit %d, stderr %q; want the existing file refused", code, stderr)
	}
	if n := len(reg.sent()); n != 0 {
		t.Fatalf("%d registrations sent with a planted key", n)
	}
}
