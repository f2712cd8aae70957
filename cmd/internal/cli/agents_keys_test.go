package cli_test

import (
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// keysRegistry answers GetAgent, AddAgentKey and RemoveAgentKey for one agent of tenant default
// holding one key, and records the key requests; refuse, when set, answers AddAgentKey and
// RemoveAgentKey instead.
type keysRegistry struct {
	registryv1.UnimplementedRegistryServiceServer
	mu       sync.Mutex
	received []proto.Message
	refuse   error
	proofs   []string // the key proofs (authn.KeyProofMetadata) AddAgentKey received, "" for none
}

const (
	keysAgentName = "tenants/default/agents/" + agentArg
	oldThumbprint = "old-thumbprint-aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	newThumbprint = "new-thumbprint-bbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func (r *keysRegistry) agent(keys ...*registryv1.AgentKey) *registryv1.Agent {
	return &registryv1.Agent{Name: keysAgentName, AgentId: agentArg, Tenant: "default", State: registryv1.AgentState_AGENT_STATE_ACTIVE, Keys: keys}
}

var oldKey = &registryv1.AgentKey{Kid: "k1", Thumbprint: oldThumbprint, Algorithm: "ES256", AddTime: timestamppb.Now()}

func (r *keysRegistry) requests() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.Message(nil), r.received...)
}

func (r *keysRegistry) record(m proto.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, m)
	return r.refuse
}

func (r *keysRegistry) GetAgent(_ context.Context, req *registryv1.GetAgentRequest) (*registryv1.GetAgentResponse, error) {
	if req.GetName() != keysAgentName {
		return nil, status.Error(codes.NotFound, "agent not found")
	}
	return &registryv1.GetAgentResponse{Agent: r.agent(oldKey)}, nil
}

func (r *keysRegistry) AddAgentKey(ctx context.Context, req *registryv1.AddAgentKeyRequest) (*registryv1.AddAgentKeyResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.proofs = append(r.proofs, strings.Join(md.Get(authn.KeyProofMetadata), ","))
	r.mu.Unlock()
	if err := r.record(req); err != nil {
		return nil, err
	}
	k := &registryv1.AgentKey{Kid: "k2", Thumbprint: newThumbprint, Algorithm: "ES256", AddTime: timestamppb.Now()}
	return &registryv1.AddAgentKeyResponse{Agent: r.agent(oldKey, k), Key: k}, nil
}

func (r *keysRegistry) RemoveAgentKey(_ context.Context, req *registryv1.RemoveAgentKeyRequest) (*registryv1.RemoveAgentKeyResponse, error) {
	if err := r.record(req); err != nil {
		return nil, err
	}
	return &registryv1.RemoveAgentKeyResponse{Agent: r.agent()}, nil
}

// publicKeyOf parses the JWK an AddAgentKey request carries, failing on private members.
func publicKeyOf(t *testing.T, jwk string) jose.JSONWebKey {
	t.Helper()
	var members map[string]any
	if err := json.Unmarshal([]byte(jwk), &members); err != nil {
		t.Fatalf("public_jwk %q: %v", jwk, err)
	}
	if _, ok := members["d"]; ok {
		t.Fatalf("public_jwk carries the private key: %q", jwk)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON([]byte(jwk)); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAgentsRotate: the new key is generated locally, its credential file written for the agent's
// tenant and client id, and only its public half registered; a refusal removes the file; an unknown
// outcome keeps it and a retry with the request id registers the same key again.
func TestAgentsRotate(t *testing.T) {
	dir := t.TempDir()
	reg := &keysRegistry{}
	serveRegistry(t, dir, reg)

	t.Run("a new credential file and its public key registered", func(t *testing.T) {
		out := filepath.Join(dir, "next.json")
		code, stdout, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", out, "--request-id", "rot-1")
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		cred, err := authn.LoadCredentialFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if cred.Tenant != "default" || cred.ClientID != agentArg || !strings.HasSuffix(cred.Issuer, "/t/default") {
			t.Fatalf("credential file for %s/%s at %s, want the agent's", cred.Tenant, cred.ClientID, cred.Issuer)
		}
		if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("credential file mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		reqs := reg.requests()
		req, ok := reqs[len(reqs)-1].(*registryv1.AddAgentKeyRequest)
		if !ok || req.GetName() != keysAgentName || req.GetRequestId() != "rot-1" {
			t.Fatalf("sent %v", reqs[len(reqs)-1])
		}
		sent := publicKeyOf(t, req.GetPublicJwk())
		jwks, err := cred.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 {
			t.Fatalf("credential's public key set %s: %v", jwks, err)
		}
		a, _ := sent.Thumbprint(crypto.SHA256)
		b, _ := set.Keys[0].Thumbprint(crypto.SHA256)
		if string(a) != string(b) || sent.KeyID != cred.KeyID() {
			t.Fatalf("registered key %s is not the credential file's key %s", sent.KeyID, cred.KeyID())
		}
		if !strings.Contains(stderr, out) || !strings.Contains(stderr, newThumbprint) || !strings.Contains(stdout, newThumbprint) || !strings.Contains(stdout, oldThumbprint) {
			t.Fatalf("stdout %q, stderr %q: want the file, the new key and both keys listed", stdout, stderr)
		}
	})

	t.Run("refused: the file is removed", func(t *testing.T) {
		reg.refuse = status.Error(codes.AlreadyExists, "the key is already in use by another agent")
		defer func() { reg.refuse = nil }()
		out := filepath.Join(dir, "refused.json")
		code, stdout, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", out)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "already in use") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Fatalf("the refused key's file stayed behind: %v", err)
		}
	})

	t.Run("unknown outcome: the file is kept and a retry registers the same key", func(t *testing.T) {
		out := filepath.Join(dir, "unknown.json")
		reg.refuse = status.Error(codes.Unavailable, "registry restarting")
		code, _, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", out, "--request-id", "rot-9")
		reg.refuse = nil
		if code != 1 || !strings.Contains(stderr, "unknown") || !strings.Contains(stderr, "--request-id rot-9") || !strings.Contains(stderr, out) {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		first := reg.requests()
		firstKey := first[len(first)-1].(*registryv1.AddAgentKeyRequest).GetPublicJwk()
		if _, err := os.Stat(out); err != nil {
			t.Fatalf("the key of an unknown outcome was removed: %v", err)
		}
		if code, _, stderr := run(t, dir, "agents", "rotate", agentArg, "--key-out", out, "--request-id", "rot-9"); code != 0 {
			t.Fatalf("retry: exit %d, stderr %q", code, stderr)
		}
		again := reg.requests()
		retry := again[len(again)-1].(*registryv1.AddAgentKeyRequest)
		if retry.GetRequestId() != "rot-9" || retry.GetPublicJwk() != firstKey {
			t.Fatalf("retry sent %v, want the same key under the same request id", retry)
		}
	})

	t.Run("refused before calling the server", func(t *testing.T) {
		exists := filepath.Join(dir, "exists.json")
		if err := os.WriteFile(exists, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name    string
			args    []string
			wantErr string
		}{
			{"no --key-out", []string{"agents", "rotate", agentArg}, "--key-out is required"},
			{"an existing file", []string{"agents", "rotate", agentArg, "--key-out", exists}, "refusing to overwrite"},
			{"a malformed agent name", []string{"agents", "rotate", "tenants/default/bots/x", "--key-out", filepath.Join(dir, "x.json")}, "want tenants/{tenant}/agents/{agent}"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				before := len(reg.requests())
				code, stdout, stderr := run(t, dir, tt.args...)
				if code != 1 || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, tt.wantErr)
				}
				if len(reg.requests()) != before {
					t.Fatal("a refused command sent a key request")
				}
			})
		}
		if b, _ := os.ReadFile(exists); string(b) != "{}" {
			t.Fatalf("the existing file was overwritten: %q", b)
		}
	})
}

// TestAgentsKeys: list prints the agent's keys, add registers the given public JWK, remove names the
// key and the reason.
func TestAgentsKeys(t *testing.T) {
	dir := t.TempDir()
	reg := &keysRegistry{}
	serveRegistry(t, dir, reg)
	jwkFile := filepath.Join(dir, "next.jwk")
	const jwk = `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k2","alg":"ES256"}`
	if err := os.WriteFile(jwkFile, []byte(jwk), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		want       proto.Message // the key request sent; nil: none
		wantStdout []string
	}{
		{"list", []string{"agents", "keys", "list", agentArg}, nil, []string{"KID", "THUMBPRINT", "k1", oldThumbprint, "ES256"}},
		{"list as JSON", []string{"agents", "keys", "list", agentArg, "-o", "json"}, nil, []string{`"thumbprint"`, oldThumbprint}},
		{"add", []string{"agents", "keys", "add", keysAgentName, "--jwk-file", jwkFile, "--request-id", "add-1"},
			&registryv1.AddAgentKeyRequest{Name: keysAgentName, PublicJwk: jwk, RequestId: "add-1"}, []string{oldThumbprint, newThumbprint}},
		{"remove", []string{"agents", "keys", "remove", agentArg, oldThumbprint, "--reason", "leaked", "--request-id", "rm-1"},
			&registryv1.RemoveAgentKeyRequest{Name: keysAgentName, Thumbprint: oldThumbprint, Reason: "leaked", RequestId: "rm-1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(reg.requests())
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			reqs := reg.requests()
			switch {
			case tt.want == nil && len(reqs) != before:
				t.Fatalf("sent %v, want nothing", reqs[before:])
			case tt.want != nil && (len(reqs) != before+1 || !proto.Equal(reqs[before], tt.want)):
				t.Fatalf("sent %v, want %v", reqs[before:], tt.want)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout %q does not show %q", stdout, w)
				}
			}
		})
	}

	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"add without a key", []string{"agents", "keys", "add", agentArg}, "--jwk-file is required"},
		{"add of a missing file", []string{"agents", "keys", "add", agentArg, "--jwk-file", filepath.Join(dir, "missing.jwk")}, "missing.jwk"},
		{"remove without a reason", []string{"agents", "keys", "remove", agentArg, oldThumbprint}, "--reason is required"},
		{"remove without a key", []string{"agents", "keys", "remove", agentArg, "--reason", "r"}, "accepts 2 arg"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(reg.requests())
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, tt.wantErr)
			}
			if len(reg.requests()) != before {
				t.Fatal("a refused command sent a key request")
			}
		})
	}

	t.Run("a refusal as it is", func(t *testing.T) {
		reg.refuse = status.Error(codes.InvalidArgument, "public_jwk: a private key is never accepted")
		defer func() { reg.refuse = nil }()
		code, stdout, stderr := run(t, dir, "agents", "keys", "add", agentArg, "--jwk-file", jwkFile)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "private key is never accepted") || strings.Contains(stderr, "unknown") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}
