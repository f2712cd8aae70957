package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// suspendRegistry records SuspendAgent, ResumeAgent and RetireAgent requests and answers them as the
// registry would for an agent of tenant default; refuse, when set, is returned instead.
type suspendRegistry struct {
	flakyRegistry
	mu       sync.Mutex
	received []proto.Message
	refuse   error
}

func (r *suspendRegistry) record(m proto.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.received = append(r.received, m)
	return r.refuse
}

func (r *suspendRegistry) last() proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.received) == 0 {
		return nil
	}
	return r.received[len(r.received)-1]
}

func (r *suspendRegistry) SuspendAgent(_ context.Context, req *registryv1.SuspendAgentRequest) (*registryv1.SuspendAgentResponse, error) {
	if err := r.record(req); err != nil {
		return nil, err
	}
	return &registryv1.SuspendAgentResponse{Agent: &registryv1.Agent{Name: req.GetName(), State: registryv1.AgentState_AGENT_STATE_SUSPENDED}}, nil
}

func (r *suspendRegistry) ResumeAgent(_ context.Context, req *registryv1.ResumeAgentRequest) (*registryv1.ResumeAgentResponse, error) {
	if err := r.record(req); err != nil {
		return nil, err
	}
	return &registryv1.ResumeAgentResponse{Agent: &registryv1.Agent{Name: req.GetName(), State: registryv1.AgentState_AGENT_STATE_ACTIVE}}, nil
}

func (r *suspendRegistry) RetireAgent(_ context.Context, req *registryv1.RetireAgentRequest) (*registryv1.RetireAgentResponse, error) {
	if err := r.record(req); err != nil {
		return nil, err
	}
	return &registryv1.RetireAgentResponse{Agent: &registryv1.Agent{Name: req.GetName(), State: registryv1.AgentState_AGENT_STATE_RETIRING}}, nil
}

const agentArg = "agt_01hzzzzzzzzzzzzzzzzzzzzzzz"

func TestSuspendResumeRetireSendWhatTheFlagsSay(t *testing.T) {
	dir := t.TempDir()
	reg := &suspendRegistry{}
	serveRegistry(t, dir, reg)
	name := "tenants/default/agents/" + agentArg

	tests := []struct {
		name      string
		args      []string
		want      proto.Message
		wantState string
	}{
		{"suspend", []string{"agents", "suspend", agentArg, "--reason", "bulk export", "--ticket", "INC-42", "--cause", "alert:a1", "--request-id", "r1", "--etag", "7"},
			&registryv1.SuspendAgentRequest{Name: name, Reason: "bulk export", Ticket: "INC-42", Cause: "alert:a1", RequestId: "r1", Etag: "7"}, "suspended"},
		{"resume", []string{"agents", "resume", name, "--reason", "false positive", "--ticket", "INC-42", "--request-id", "r2"},
			&registryv1.ResumeAgentRequest{Name: name, Reason: "false positive", Ticket: "INC-42", RequestId: "r2"}, "active"},
		{"retire for an anomaly", []string{"agents", "retire", agentArg, "--reason", "confirmed", "--trigger", "anomaly", "--request-id", "r3"},
			&registryv1.RetireAgentRequest{Name: name, Reason: "confirmed", Trigger: "anomaly", RequestId: "r3"}, "retiring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if got := reg.last(); !proto.Equal(got, tt.want) {
				t.Fatalf("sent %v, want %v", got, tt.want)
			}
			if !strings.Contains(stdout, name) || !strings.Contains(stdout, tt.wantState) {
				t.Fatalf("stdout %q does not show %s %s", stdout, name, tt.wantState)
			}
		})
	}

	t.Run("a generated request id", func(t *testing.T) {
		if code, _, stderr := run(t, dir, "agents", "suspend", agentArg, "--reason", "r"); code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		req := reg.last().(*registryv1.SuspendAgentRequest)
		if !strings.HasPrefix(req.GetRequestId(), "suspend-") || req.GetCause() != "" {
			t.Fatalf("request id %q cause %q", req.GetRequestId(), req.GetCause())
		}
	})

	t.Run("a refusal as it is", func(t *testing.T) {
		reg.refuse = status.Error(codes.FailedPrecondition, "cannot suspend an agent in state PENDING")
		defer func() { reg.refuse = nil }()
		code, stdout, stderr := run(t, dir, "agents", "suspend", agentArg, "--reason", "r")
		if code != 1 || stdout != "" || !strings.Contains(stderr, "state PENDING") || strings.Contains(stderr, "unknown") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})

	t.Run("an unknown outcome names the request id", func(t *testing.T) {
		reg.refuse = status.Error(codes.Unavailable, "registry restarting")
		defer func() { reg.refuse = nil }()
		code, _, stderr := run(t, dir, "agents", "resume", agentArg, "--reason", "r", "--request-id", "res-9")
		if code != 1 || !strings.Contains(stderr, "the outcome of the resumption is unknown") || !strings.Contains(stderr, "--request-id res-9") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestRegisterTTLSetsTheExpireTime(t *testing.T) {
	dir := t.TempDir()
	reg := &flakyRegistry{}
	serveRegistry(t, dir, reg)
	before := time.Now()
	code, _, stderr := run(t, dir, append(registerArgs, "--key-out", filepath.Join(dir, "k.json"), "--ttl", "2h")...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	after := time.Now()
	sent := reg.sent()
	if len(sent) != 1 || sent[0].GetAgent().GetExpireTime() == nil {
		t.Fatalf("sent %v, want one registration with an expire time", sent)
	}
	got := sent[0].GetAgent().GetExpireTime().AsTime()
	if got.Before(before.Add(2*time.Hour).Truncate(time.Second)) || got.After(after.Add(2*time.Hour)) {
		t.Fatalf("expire_time %s, want now + 2h (between %s and %s)", got, before.Add(2*time.Hour), after.Add(2*time.Hour))
	}
}

func TestSuspensionFlagsAreCheckedBeforeCallingTheServer(t *testing.T) {
	dir := t.TempDir()
	writeSession(t, dir) // a server that does not exist: every case must fail before dialling it
	key := filepath.Join(dir, "k.json")
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"suspend without a reason", []string{"agents", "suspend", agentArg}, "--reason is required"},
		{"resume without a reason", []string{"agents", "resume", agentArg}, "--reason is required"},
		{"suspend without an agent", []string{"agents", "suspend", "--reason", "r"}, "accepts 1 arg"},
		{"ttl under a minute", append(registerArgs, "--key-out", key, "--ttl", "30s"), "--ttl 30s: want between 1m0s and 720h0m0s"},
		{"ttl over 30 days", append(registerArgs, "--key-out", key, "--ttl", "721h"), "--ttl 721h0m0s: want between"},
		{"ttl and expires-in", append(registerArgs, "--key-out", key, "--ttl", "2h", "--expires-in", "3h"), "--ttl and --expires-in are exclusive"},
		{"ttl not a duration", append(registerArgs, "--key-out", key, "--ttl", "two hours"), "invalid argument \"two hours\" for \"--ttl\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, dir, tt.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, tt.wantErr)
			}
		})
	}
}
