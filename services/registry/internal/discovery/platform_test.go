package discovery_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/registry/internal/discovery"
	"github.com/agentid/agentid/services/registry/internal/registry"
)

// appendAgentEvent appends an agent event as the registry would have (or did, before owner and
// sponsor were both required) and waits until the registry's read model has applied it.
func (h *harness) appendAgentEvent(t *testing.T, agentID, typ string, data proto.Message) {
	t.Helper()
	name := registry.AgentName("acme", agentID)
	ev, err := h.store.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: registry.AggregateAgent, AggregateID: agentID, ExpectedVersion: eventstore.AnyVersion,
		IdempotencyKey: typ + "/" + agentID, Type: typ, Subject: name, Data: data,
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "admin@acme.example", Kind: eventstore.ActorHuman}},
	})
	if err != nil {
		t.Fatalf("append %s: %v", typ, err)
	}
	if _, err := h.reg.GetAgent(as(t, acmeAdmin), &registryv1.GetAgentRequest{Name: name, MinVersion: ev.Sequence}); err != nil {
		t.Fatalf("read %s after %s: %v", name, typ, err)
	}
}

// listPlatform pages through the platform findings with pages of size and returns them as
// "rule subject" lines.
func listPlatform(t *testing.T, h *harness, days, size int32) []string {
	t.Helper()
	var out []string
	token := ""
	seen := map[string]bool{}
	for range 1000 {
		res, err := h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: days, PageSize: size, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetFindings()) > int(size) {
			t.Fatalf("page of %d findings, asked for %d", len(res.GetFindings()), size)
		}
		for _, f := range res.GetFindings() {
			if seen[f.GetId()] {
				t.Fatalf("finding %s (%s %s) listed twice", f.GetId(), f.GetRuleId(), f.GetRedactedValue())
			}
			seen[f.GetId()] = true
			out = append(out, f.GetRuleId()+" "+f.GetRedactedValue())
		}
		if token = res.GetNextPageToken(); token == "" {
			return out
		}
	}
	t.Fatal("the listing does not end")
	return nil
}

// TestPlatformFindingsPageThroughIndexes: every kind of platform finding — an unregistered
// client, inactive agents, an orphaned agent, an agent registered without a sponsor, and an agent
// whose sponsor the tenant's directory does not list — is listed once, section after section,
// whatever the page size; the last page has no token; a page token survives changes to what
// comes before it.
func TestPlatformFindingsPageThroughIndexes(t *testing.T) {
	later := time.Now().Add(100 * 24 * time.Hour)
	h := newHarness(t, func() time.Time { return later })
	_, jwks := newKey(t)
	a1 := h.register(t, "r1", jwks)
	_, jwks2 := newKey(t)
	a2 := h.register(t, "r2", jwks2)
	h.appendAgentEvent(t, a2.GetAgentId(), registry.EventAgentOrphaned, &registryv1.AgentOrphaned{Name: a2.GetName(),
		Principal: "alice@acme.example", Role: "sponsor", Reason: "sponsor alice@acme.example departed"})
	legacyID := names.DeriveAgentID("acme", "legacy-1")
	legacy := registry.AgentName("acme", legacyID)
	h.appendAgentEvent(t, legacyID, registry.EventAgentRegistered, &registryv1.AgentRegistered{Agent: &registryv1.Agent{
		Name: legacy, AgentId: legacyID, Tenant: "acme", DisplayName: "Legacy bot", Owner: "team:support"}})
	h.createClient(t, "acme", "legacy-bot", "", false)
	if _, err := h.reg.SyncDirectory(as(t, acmeAdmin), &registryv1.SyncDirectoryRequest{Parent: "tenants/acme",
		Principals: []*registryv1.Principal{{Id: "team:support"}}}); err != nil {
		t.Fatal(err)
	}

	want := []string{
		discovery.RuleClientUnregistered + " tenants/acme/clients/legacy-bot",
		discovery.RuleInactiveAgent + " " + a1.GetName(),
		discovery.RuleInactiveAgent + " " + a2.GetName(),
		discovery.RuleInactiveAgent + " " + legacy,
		discovery.RuleOwnerlessAgent + " " + a2.GetName(),
		discovery.RuleOwnerlessAgent + " " + legacy,
		discovery.RuleSponsorNotInDirectory + " " + a1.GetName(), // a2 is orphaned already
	}
	for _, size := range []int32{1, 2, 3, 1000} {
		if got := listPlatform(t, h, 30, size); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("pages of %d:\n%s\nwant:\n%s", size, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	res, err := h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 3650})
	if err != nil || res.GetNextPageToken() != "" || len(res.GetFindings()) != 4 {
		t.Fatalf("3650 days: %v %v, want the 4 findings that are not about inactivity in one page", res, err)
	}
	for _, f := range res.GetFindings() {
		switch f.GetRuleId() {
		case discovery.RuleSponsorNotInDirectory:
			if !strings.Contains(f.GetMessage(), "sponsor alice@acme.example is not listed in the tenant's directory") ||
				f.GetSeverity() != registryv1.FindingSeverity_FINDING_SEVERITY_HIGH || f.GetAgent() != a1.GetName() {
				t.Errorf("directory finding %v", f)
			}
		case discovery.RuleOwnerlessAgent:
			if f.GetAgent() == legacy && !strings.Contains(f.GetMessage(), "no sponsor") {
				t.Errorf("legacy finding %v", f)
			}
			if f.GetAgent() == a2.GetName() && !strings.Contains(f.GetMessage(), "orphaned: sponsor alice@acme.example departed") {
				t.Errorf("orphaned finding %v", f)
			}
		}
	}

	// A page token is a position, not an offset: what is added before it is not listed again.
	first, err := h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 30, PageSize: 1})
	if err != nil || len(first.GetFindings()) != 1 || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %v %v", first, err)
	}
	h.createClient(t, "acme", "aaa-bot", "", false)
	second, err := h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 30, PageSize: 1, PageToken: first.GetNextPageToken()})
	if err != nil || len(second.GetFindings()) != 1 || second.GetFindings()[0].GetRuleId()+" "+second.GetFindings()[0].GetRedactedValue() != want[1] {
		t.Fatalf("second page after a client was added before the token: %v %v, want %s", second, err, want[1])
	}
	_, err = h.disco.ListPlatformFindings(as(t, acmeAnalyst), &registryv1.ListPlatformFindingsRequest{Parent: "tenants/acme", InactiveDays: 31, PageSize: 1, PageToken: first.GetNextPageToken()})
	wantCode(t, err, codes.InvalidArgument, "page_token")

	// Adoption finds a platform finding about a client by id alone; one about a registered
	// agent is not adoptable, sent or not.
	adopt := func(f *registryv1.Finding, id string) error {
		_, err := h.disco.AdoptFinding(as(t, acmeAdmin), &registryv1.AdoptFindingRequest{Parent: "tenants/acme", FindingId: id, Finding: f,
			Owner: "team:support", Sponsor: "team:support", Agent: &registryv1.Agent{PublicJwks: jwks}})
		return err
	}
	var dirFinding *registryv1.Finding
	for _, f := range res.GetFindings() {
		if f.GetRuleId() == discovery.RuleSponsorNotInDirectory {
			dirFinding = f
		}
	}
	wantCode(t, adopt(dirFinding, dirFinding.GetId()), codes.FailedPrecondition, "registered agent "+a1.GetName())
	wantCode(t, adopt(nil, dirFinding.GetId()), codes.NotFound, dirFinding.GetId())
	forged := proto.Clone(dirFinding).(*registryv1.Finding)
	forged.RedactedValue = "tenants/acme/clients/aaa-bot"
	wantCode(t, adopt(forged, forged.GetId()), codes.InvalidArgument, "finding.id")
}
