package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/assetgraph"
	"github.com/agentid/agentid/pkg/testkit"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/lifecycle/app"
	"github.com/agentid/agentid/services/lifecycle/internal/cleanup"
	"github.com/agentid/agentid/workflows"
	"github.com/agentid/agentid/workflows/workflowstest"
)

// cleanupReceiver is a cleanup webhook endpoint that records what it receives, with whether the
// signature verified.
type cleanupReceiver struct {
	secret string
	mu     sync.Mutex
	got    []cleanupDelivery
}

type cleanupDelivery struct {
	body           []byte
	idempotencyKey string
	signed         bool
}

func (c *cleanupReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sig := r.Header.Get(cleanup.SignatureHeader)
	signed := false
	if ts, _, ok := strings.Cut(strings.TrimPrefix(sig, "t="), ","); ok {
		if unix, err := strconv.ParseInt(ts, 10, 64); err == nil {
			signed = sig == cleanup.Sign([]byte(c.secret), time.Unix(unix, 0), body)
		}
	}
	c.mu.Lock()
	c.got = append(c.got, cleanupDelivery{body: body, idempotencyKey: r.Header.Get("Idempotency-Key"), signed: signed})
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (c *cleanupReceiver) deliveries() []cleanupDelivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// TestCleanupWebhookReceivesTheDeclaredDependencies: deprovisioning's cleanup reads the agent's
// declared dependencies from its registry record (through the asset graph) and the cleanup webhook
// receives them, normalised, in the signed payload.
func TestCleanupWebhookReceivesTheDeclaredDependencies(t *testing.T) {
	recv := &cleanupReceiver{secret: strings.Repeat("s", 32)}
	hook := httptest.NewServer(recv)
	t.Cleanup(hook.Close)
	e := startWith(t, testkit.StartTemporal(t).HostPort(), func(c *app.Config) {
		c.CleanupWebhooks = []app.CleanupWebhook{{Name: "resources", URL: hook.URL, Secret: recv.secret}}
	})
	ctx := t.Context()

	agent := workflowstest.NewAgent(tenant, "ag-deps", registryv1.RiskTier_RISK_TIER_LOW)
	agent.Dependencies = []*registryv1.Dependency{
		{Kind: "webhook", Uri: "https://hooks.corp.example/claims/notify", Description: "tells adjusters"},
		{Kind: "queue", Uri: "nats://nats.corp.example/claims.intake", Description: "incoming claims"},
		{Kind: "storage", Uri: "s3://claims-archive/ag-deps/", Description: "scanned documents"},
	}
	e.register(t, agent, "register-ag-deps")
	eventually(t, "the agent to be activated", func() bool { return len(e.fakes.Requests("ActivateAgent")) > 0 })

	if _, err := e.fakes.Registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{Name: agent.GetName(), RequestId: "retire-ag-deps"}); err != nil {
		t.Fatal(err)
	}
	e.appendEvent(t, "ag-deps", "retire-ag-deps", "agent.retirement_requested",
		&registryv1.AgentRetirementRequested{Name: agent.GetName(), Reason: "project finished", Ticket: "CHG-9", Trigger: "task_completed"})
	eventually(t, "the retirement to complete", func() bool { return len(e.fakes.Requests("CompleteRetirement")) > 0 })

	got := recv.deliveries()
	if len(got) != 1 {
		t.Fatalf("the cleanup webhook received %d requests, want 1", len(got))
	}
	d := got[0]
	if !d.signed || d.idempotencyKey != "deprovision/acme/ag-deps/cleanup:resources" {
		t.Fatalf("delivery signed %v with Idempotency-Key %q", d.signed, d.idempotencyKey)
	}
	var req workflows.CleanupRequest
	if err := json.Unmarshal(d.body, &req); err != nil {
		t.Fatalf("payload %s: %v", d.body, err)
	}
	want := []assetgraph.Dependency{
		{Kind: "queue", URI: "nats://nats.corp.example/claims.intake", Description: "incoming claims"},
		{Kind: "storage", URI: "s3://claims-archive/ag-deps/", Description: "scanned documents"},
		{Kind: "webhook", URI: "https://hooks.corp.example/claims/notify", Description: "tells adjusters"},
	}
	if req.Agent != agent.GetName() || req.AgentID != "ag-deps" || req.Trigger != "task_completed" || !slices.Equal(req.Dependencies, want) {
		t.Fatalf("cleanup payload %s: want agent %s, trigger task_completed and dependencies %v", d.body, agent.GetName(), want)
	}
}
