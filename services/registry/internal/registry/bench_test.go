package registry_test

import (
	"bytes"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// TestInventoryScale builds the agents read model of AGENTID_SCALE agents (default: skipped) in
// one tenant by applying registration events directly (no event store), then reports heap bytes
// per agent, filtered List page latencies (p50/p99 over 200 pages each), and the checkpoint size
// and restore time. It reports numbers; it asserts none.
func TestInventoryScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("AGENTID_SCALE"))
	if n <= 0 {
		t.Skip("set AGENTID_SCALE=1000000 to run")
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	start := time.Now()
	inv := seedInventory(t, n)
	t.Logf("applied %d registrations (+activations, suspensions, activity) in %s", n, time.Since(start))
	after := heap()
	t.Logf("heap: %d MiB for %d agents = %d bytes/agent", (after-before)>>20, n, (after-before)/uint64(n))

	orphaned := false
	mixes := []struct {
		name string
		req  *registryv1.ListAgentsRequest
	}{
		{"no filter", &registryv1.ListAgentsRequest{}},
		{"env=prod,total", &registryv1.ListAgentsRequest{Environments: []registryv1.Environment{registryv1.Environment_ENVIRONMENT_PROD}, ShowTotalSize: true}},
		{"owner", &registryv1.ListAgentsRequest{Owner: "team:t3"}},
		{"tier high+state suspended,total", &registryv1.ListAgentsRequest{RiskTiers: []registryv1.RiskTier{registryv1.RiskTier_RISK_TIER_HIGH}, States: []registryv1.AgentState{registryv1.AgentState_AGENT_STATE_SUSPENDED}, ShowTotalSize: true}},
		{"labels app=a1,!team", &registryv1.ListAgentsRequest{LabelSelectors: []string{"app=a1", "!team"}}},
		{"inactive since+scope,total", &registryv1.ListAgentsRequest{InactiveSince: timestamppb.New(invT0.Add(3 * time.Hour)), Scope: "x2.write", ShowTotalSize: true}},
		{"expire before,order expire desc", &registryv1.ListAgentsRequest{ExpireBefore: timestamppb.New(invT0.Add(5 * 24 * time.Hour)), OrderBy: "expire_time desc"}},
		{"not orphaned,order display_name", &registryv1.ListAgentsRequest{Orphaned: &orphaned, OrderBy: "display_name"}},
		{"sponsor,order last_active", &registryv1.ListAgentsRequest{Sponsor: "s1@corp.example", OrderBy: "last_active_time"}},
	}
	for _, m := range mixes {
		req := m.req
		req.PageSize = 50
		var lat []time.Duration
		for range 200 {
			q, err := registry.ParseAgentQuery("acme", req)
			if err != nil {
				t.Fatal(err)
			}
			s := time.Now()
			page, err := inv.p.List(q)
			lat = append(lat, time.Since(s))
			if err != nil {
				t.Fatal(err)
			}
			req.PageToken = page.NextPageToken // walk forward through the listing
		}
		slices.Sort(lat)
		t.Logf("List %-36s page 50: p50 %v p99 %v", m.name, lat[len(lat)/2], lat[len(lat)*99/100])
	}

	var buf bytes.Buffer
	s := time.Now()
	if err := inv.p.Checkpoint()(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint: %d MiB written in %s", buf.Len()>>20, time.Since(s))
	s = time.Now()
	restored := registry.NewAgentProjection()
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %s for %d agents", time.Since(s), restored.Count())
}
