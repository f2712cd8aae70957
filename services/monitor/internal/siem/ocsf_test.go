package siem_test

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/eventstore"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
	"github.com/agentid/agentid/services/monitor/internal/siem"
)

var (
	t0     = time.Date(2026, 3, 4, 3, 0, 0, 0, time.UTC)
	detect = t0.Add(800 * time.Millisecond)
	agent  = "tenants/acme/agents/report-bot"
)

// stored builds an event as a consumer would receive it.
func stored(t *testing.T, typ string, m proto.Message, md eventstore.Metadata) eventstore.Event {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Event{
		ID: "0195f000-0000-7000-8000-000000000001", Type: typ, Source: "agentid/test", Time: t0,
		Metadata: md, DataSchema: string(m.ProtoReflect().Descriptor().FullName()), Data: data,
		Stream: "S", Sequence: 7,
	}
}

func testAlert() *monitorv1.Alert {
	return &monitorv1.Alert{
		Name: "tenants/acme/alerts/a1", AlertId: "0195f000-0000-7000-8000-0000000000a1", Tenant: "acme", Agent: agent,
		Detector: "bulk_export", Severity: monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL,
		Summary:    "report-bot returned 412000 rows in one request at 03:00",
		DetectTime: timestamppb.New(detect), WindowStart: timestamppb.New(t0), WindowEnd: timestamppb.New(t0.Add(time.Second)),
		Evidence: []*monitorv1.AlertEvidence{{
			Metric: "rows_per_request", Baseline: 120, Observed: 412000, Score: 41.2, Threshold: 40,
			Explanation: "412,000 rows in one request; baseline median 120, MAD 40",
		}},
		EventIds: []string{"ev-1", "ev-2"}, Owner: "alice", Sponsor: "bob", RiskTier: "high", Environment: "prod", AgentKnown: true,
	}
}

// asJSON round-trips an OCSF event through its JSON form, as receivers see it.
func asJSON(t *testing.T, e *siem.Event) map[string]any {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func path(m map[string]any, keys ...any) any {
	var v any = m
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			mm, _ := v.(map[string]any)
			v = mm[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func TestMapAlertIsADetectionFinding(t *testing.T) {
	ev := stored(t, "alert.raised", &monitorv1.AlertRaised{Alert: testAlert()},
		eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "monitor", Kind: eventstore.ActorService}})
	e, ok, err := siem.Map(ev)
	if err != nil || !ok {
		t.Fatalf("Map = %v, %v", ok, err)
	}
	m := asJSON(t, e)
	want := map[string]any{
		"class_uid": 2004.0, "category_uid": 2.0, "activity_id": 1.0, "type_uid": 200401.0,
		"class_name": "Detection Finding", "type_name": "Detection Finding: Create",
		"time": float64(detect.UnixMilli()), "severity_id": 5.0, "severity": "Critical", "status_id": 1.0,
		"message": "report-bot returned 412000 rows in one request at 03:00",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	checks := []struct {
		path []any
		want any
	}{
		{[]any{"metadata", "uid"}, "0195f000-0000-7000-8000-0000000000a1"},
		{[]any{"metadata", "version"}, siem.SchemaVersion},
		{[]any{"metadata", "product", "name"}, "agentid"},
		{[]any{"metadata", "product", "vendor_name"}, "agentid"},
		{[]any{"metadata", "tenant_uid"}, "acme"},
		{[]any{"metadata", "event_code"}, "alert.raised"},
		{[]any{"finding_info", "uid"}, "0195f000-0000-7000-8000-0000000000a1"},
		{[]any{"finding_info", "types", 0}, "bulk_export"},
		{[]any{"finding_info", "analytic", "type_id"}, 3.0},
		{[]any{"finding_info", "first_seen_time"}, float64(t0.UnixMilli())},
		{[]any{"finding_info", "last_seen_time"}, float64(t0.Add(time.Second).UnixMilli())},
		{[]any{"finding_info", "related_events", 1, "uid"}, "ev-2"},
		{[]any{"evidences", 0, "data", "metric"}, "rows_per_request"},
		{[]any{"evidences", 0, "data", "observed"}, 412000.0},
		{[]any{"evidences", 0, "data", "baseline"}, 120.0},
		{[]any{"resources", 0, "uid"}, agent},
		{[]any{"resources", 0, "type"}, "ai_agent"},
		{[]any{"resources", 0, "owner", "uid"}, "alice"},
		{[]any{"resources", 0, "data", "risk_tier"}, "high"},
		{[]any{"resources", 0, "data", "agent_known"}, true},
		{[]any{"resources", 0, "labels", 0}, "environment:prod"},
	}
	for _, c := range checks {
		if got := path(m, c.path...); got != c.want {
			t.Errorf("%v = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestMapAccountChanges(t *testing.T) {
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}, CorrelationID: "req-9"}
	tests := []struct {
		name         string
		typ          string
		msg          proto.Message
		activity     float64
		activityName string
		user         string
		userType     string
		severity     float64
		unmapped     map[string]any
	}{
		{"registered", "agent.registered", &registryv1.AgentRegistered{Agent: &registryv1.Agent{
			Name: agent, DisplayName: "Report bot", Owner: "alice", Environment: registryv1.Environment_ENVIRONMENT_PROD,
			RiskTier: registryv1.RiskTier_RISK_TIER_HIGH}},
			1, "Create", agent, "AI Agent", 1, map[string]any{"owner": "alice", "environment": "prod", "risk_tier": "high"}},
		{"activated", "agent.activated", &registryv1.AgentActivated{Name: agent, DecisionId: "d1", ApprovedBy: "bob"},
			2, "Enable", agent, "AI Agent", 1, map[string]any{"approved_by": "bob"}},
		{"suspended", "agent.suspended", &registryv1.AgentSuspended{Name: agent, Reason: "bulk export", Cause: "alert:a1"},
			5, "Disable", agent, "AI Agent", 3, map[string]any{"cause": "alert:a1", "reason": "bulk export"}},
		{"resumed", "agent.resumed", &registryv1.AgentResumed{Name: agent, Reason: "false positive"},
			2, "Enable", agent, "AI Agent", 1, map[string]any{"reason": "false positive"}},
		{"retired", "agent.retired", &registryv1.AgentRetired{Name: agent, VerifyTime: timestamppb.New(t0)},
			6, "Delete", agent, "AI Agent", 2, map[string]any{"verify_time": float64(t0.UnixMilli())}},
		{"updated", "agent.updated", &registryv1.AgentUpdated{Name: agent, ChangedFields: []string{"scopes", "data_sensitivity"}, Reason: "review",
			Classification: &registryv1.Classification{DerivedRiskTier: registryv1.RiskTier_RISK_TIER_HIGH}},
			99, "Update", agent, "AI Agent", 1, map[string]any{"changed_fields": "scopes,data_sensitivity", "reason": "review", "risk_tier": "high"}},
		{"submitted", "agent.submitted", &registryv1.AgentSubmitted{Name: agent}, 99, "Submit", agent, "AI Agent", 1, nil},
		{"expired", "agent.expired", &registryv1.AgentExpired{Name: agent, ExpireTime: timestamppb.New(t0)},
			5, "Disable", agent, "AI Agent", 2, map[string]any{"expire_time": float64(t0.UnixMilli())}},
		{"ownership transferred", "agent.ownership_transferred", &registryv1.AgentOwnershipTransferred{Name: agent, FromOwner: "bob", ToOwner: "carol",
			FromSponsor: "dave", ToSponsor: "erin", Reason: "bob left the team"},
			99, "Transfer Ownership", agent, "AI Agent", 3, map[string]any{"from_owner": "bob", "to_owner": "carol",
				"from_sponsor": "dave", "to_sponsor": "erin", "reason": "bob left the team"}},
		{"orphaned", "agent.orphaned", &registryv1.AgentOrphaned{Name: agent, Principal: "bob", Role: "owner,sponsor", Reason: "owner and sponsor bob departed"},
			99, "Orphan", agent, "AI Agent", 3, map[string]any{"principal": "bob", "role": "owner,sponsor", "reason": "owner and sponsor bob departed"}},
		{"client disabled", "tokens.revoked", &issuerv1.TokensRevoked{Tenant: "acme", Target: issuerv1.RevocationTarget_REVOCATION_TARGET_CLIENT,
			ClientId: "report-bot-client", Cause: issuerv1.RevocationCause_REVOCATION_CAUSE_CLIENT_DISABLED, Reason: "leaked key"},
			5, "Disable", "report-bot-client", "OAuth Client", 2, map[string]any{"cause": "client_disabled", "target": "client"}},
		{"agent tokens revoked", "tokens.revoked", &issuerv1.TokensRevoked{Tenant: "acme", Target: issuerv1.RevocationTarget_REVOCATION_TARGET_AGENT,
			Agent: agent, Cause: issuerv1.RevocationCause_REVOCATION_CAUSE_AGENT_STATE, SourceEventId: "ev-s"},
			99, "Revoke Tokens", agent, "AI Agent", 1, map[string]any{"cause": "agent_state", "source_event_id": "ev-s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok, err := siem.Map(stored(t, tt.typ, tt.msg, md))
			if err != nil || !ok {
				t.Fatalf("Map = %v, %v", ok, err)
			}
			m := asJSON(t, e)
			if m["class_uid"] != 3001.0 || m["category_uid"] != 3.0 || m["activity_id"] != tt.activity ||
				m["type_uid"] != 300100+tt.activity || m["activity_name"] != tt.activityName || m["status_id"] != 1.0 {
				t.Errorf("class/category/activity/type/name/status = %v/%v/%v/%v/%v/%v", m["class_uid"], m["category_uid"],
					m["activity_id"], m["type_uid"], m["activity_name"], m["status_id"])
			}
			if m["severity_id"] != tt.severity {
				t.Errorf("severity_id = %v, want %v", m["severity_id"], tt.severity)
			}
			if path(m, "user", "uid") != tt.user || path(m, "user", "type") != tt.userType {
				t.Errorf("user = %v, want %s (%s)", m["user"], tt.user, tt.userType)
			}
			if path(m, "actor", "user", "uid") != "alice" || path(m, "actor", "user", "type_id") != 1.0 {
				t.Errorf("actor = %v, want the human alice", m["actor"])
			}
			if path(m, "metadata", "correlation_uid") != "req-9" || path(m, "metadata", "event_code") != tt.typ {
				t.Errorf("metadata = %v", m["metadata"])
			}
			for k, v := range tt.unmapped {
				if got := path(m, "unmapped", k); got != v {
					t.Errorf("unmapped.%s = %v, want %v", k, got, v)
				}
			}
		})
	}
}

func TestMapSkipsAndRefuses(t *testing.T) {
	md := eventstore.Metadata{Tenant: "acme", Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}}
	// Not exported: no error, not ok.
	for _, ev := range []eventstore.Event{
		stored(t, "agent.noted", &registryv1.AgentActivated{Name: agent}, md),
		stored(t, "client.created", &issuerv1.ClientCreated{}, md),
	} {
		if _, ok, err := siem.Map(ev); ok || err != nil {
			t.Errorf("Map(%s) = %v, %v; want skipped", ev.Type, ok, err)
		}
	}
	bad := []struct {
		name string
		ev   eventstore.Event
	}{
		{"alert of another tenant", stored(t, "alert.raised", &monitorv1.AlertRaised{Alert: func() *monitorv1.Alert {
			a := testAlert()
			a.Tenant = "evil"
			return a
		}()}, md)},
		{"alert without alert", stored(t, "alert.raised", &monitorv1.AlertRaised{}, md)},
		{"wrong payload", stored(t, "alert.raised", &registryv1.AgentActivated{Name: agent}, md)},
		{"tenant not a token", stored(t, "agent.activated", &registryv1.AgentActivated{Name: agent},
			eventstore.Metadata{Tenant: "a.b", Actor: md.Actor})},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok, err := siem.Map(tt.ev); err == nil || ok {
				t.Fatalf("Map = %v, %v; want an error", ok, err)
			}
		})
	}
}
