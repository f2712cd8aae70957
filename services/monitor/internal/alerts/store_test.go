package alerts_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
)

var t0 = time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

// alert builds an alert detected at t0 plus min minutes.
func alert(tenant, id, agent, detector string, sev monitorv1.AlertSeverity, minutes int) *monitorv1.Alert {
	return &monitorv1.Alert{
		Name: "tenants/" + tenant + "/alerts/" + id, AlertId: id, Tenant: tenant, Agent: agent, Detector: detector,
		Severity: sev, DetectTime: timestamppb.New(t0.Add(time.Duration(minutes) * time.Minute)),
	}
}

func ids(list []*monitorv1.Alert) []string {
	var out []string
	for _, a := range list {
		out = append(out, a.GetAlertId())
	}
	return out
}

const (
	low  = monitorv1.AlertSeverity_ALERT_SEVERITY_LOW
	high = monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH
	crit = monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL
)

func TestStoreListFiltersNewestFirst(t *testing.T) {
	s := alerts.NewStore(0)
	for _, a := range []*monitorv1.Alert{
		alert("acme", "a1", "tenants/acme/agents/x", "off_hours", low, 1),
		alert("acme", "a2", "tenants/acme/agents/y", "bulk_export", crit, 2),
		alert("acme", "a3", "tenants/acme/agents/x", "bulk_export", high, 3),
		alert("acme", "a4", "ghost-client", "unknown_agent", high, 3), // same time as a3: id breaks the tie
		alert("globex", "g1", "tenants/globex/agents/x", "bulk_export", crit, 4),
	} {
		if !s.Put(a) {
			t.Fatalf("Put(%s) = false", a.GetAlertId())
		}
	}
	tests := []struct {
		name string
		q    alerts.Query
		want []string
	}{
		{"all of a tenant", alerts.Query{Tenant: "acme"}, []string{"a4", "a3", "a2", "a1"}},
		{"one agent", alerts.Query{Tenant: "acme", Agent: "tenants/acme/agents/x"}, []string{"a3", "a1"}},
		{"a ghost agent by client id", alerts.Query{Tenant: "acme", Agent: "ghost-client"}, []string{"a4"}},
		{"one detector", alerts.Query{Tenant: "acme", Detector: "bulk_export"}, []string{"a3", "a2"}},
		{"at least high", alerts.Query{Tenant: "acme", MinSeverity: high}, []string{"a4", "a3", "a2"}},
		{"critical only", alerts.Query{Tenant: "acme", MinSeverity: crit}, []string{"a2"}},
		{"since a time", alerts.Query{Tenant: "acme", Start: t0.Add(2 * time.Minute)}, []string{"a4", "a3", "a2"}},
		{"since a time between milliseconds", alerts.Query{Tenant: "acme", Start: t0.Add(2*time.Minute + time.Microsecond)}, []string{"a4", "a3"}},
		{"another tenant", alerts.Query{Tenant: "globex"}, []string{"g1"}},
		{"unknown tenant", alerts.Query{Tenant: "initech"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.List(tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tt.want) || next != "" {
				t.Errorf("ids = %v next %q, want %v", ids(got), next, tt.want)
			}
		})
	}
}

func TestStoreKeepsAnAlertOnce(t *testing.T) {
	s := alerts.NewStore(0)
	a := alert("acme", "a1", "tenants/acme/agents/x", "off_hours", low, 1)
	if !s.Put(a) {
		t.Fatal("first Put = false")
	}
	again := alert("acme", "a1", "tenants/acme/agents/x", "off_hours", crit, 9)
	if s.Put(again) {
		t.Fatal("second Put of the same id = true")
	}
	got, ok := s.Get("acme", "a1")
	if !ok || got.GetSeverity() != low || s.Len() != 1 {
		t.Fatalf("Get = %v %v, Len %d: want the first copy only", got, ok, s.Len())
	}
	got.Severity = crit // a copy: the store is unchanged
	if again, _ := s.Get("acme", "a1"); again.GetSeverity() != low {
		t.Fatal("Get returned the stored alert itself")
	}
	if _, ok := s.Get("globex", "a1"); ok {
		t.Fatal("another tenant sees the alert")
	}
	if s.Put(&monitorv1.Alert{AlertId: "x"}) || s.Put(&monitorv1.Alert{Tenant: "acme"}) {
		t.Fatal("an alert without tenant or id was stored")
	}
}

func TestStorePagesAreStable(t *testing.T) {
	s := alerts.NewStore(0)
	for i := range 10 {
		s.Put(alert("acme", fmt.Sprintf("a%02d", i), "tenants/acme/agents/x", "off_hours", low, i))
	}
	var got []string
	q := alerts.Query{Tenant: "acme", PageSize: 3}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		page, next, err := s.List(q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids(page)...)
		if pages == 0 {
			// Alerts raised while paging: a newer one and one in the middle of what is left.
			s.Put(alert("acme", "new", "tenants/acme/agents/x", "off_hours", low, 60))
			s.Put(alert("acme", "a04b", "tenants/acme/agents/x", "off_hours", low, 4))
		}
		if next == "" {
			break
		}
		q.PageToken = next
	}
	want := []string{"a09", "a08", "a07", "a06", "a05", "a04b", "a04", "a03", "a02", "a01", "a00"}
	if !slices.Equal(got, want) {
		t.Fatalf("paged = %v, want %v", got, want)
	}
}

func TestStoreListRefusesBadInput(t *testing.T) {
	s := alerts.NewStore(0)
	for i := range 3 {
		s.Put(alert("acme", fmt.Sprintf("a%d", i), "tenants/acme/agents/x", "off_hours", low, i))
	}
	_, next, err := s.List(alerts.Query{Tenant: "acme", PageSize: 1})
	if err != nil || next == "" {
		t.Fatalf("first page: next %q, %v", next, err)
	}
	tests := []struct {
		name, field string
		q           alerts.Query
	}{
		{"no tenant", "tenant", alerts.Query{}},
		{"negative page size", "page_size", alerts.Query{Tenant: "acme", PageSize: -1}},
		{"garbage token", "page_token", alerts.Query{Tenant: "acme", PageToken: "!!"}},
		{"token of other filters", "page_token", alerts.Query{Tenant: "acme", Detector: "bulk_export", PageToken: next}},
		{"token of another tenant", "page_token", alerts.Query{Tenant: "globex", PageToken: next}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.List(tt.q)
			if e := errs.FromStatus(err); errs.KindOf(err) != errs.KindInvalidArgument || e.Field != tt.field {
				t.Fatalf("err = %v, want InvalidArgument naming %s", err, tt.field)
			}
		})
	}
}

// TestStoreEvictsTheOldestAlertsOfTheTenant: the bound is per tenant; a tenant's flood evicts its
// own oldest alerts, never another tenant's.
func TestStoreEvictsTheOldestAlertsOfTheTenant(t *testing.T) {
	s := alerts.NewStore(3)
	s.Put(alert("globex", "g1", "x", "off_hours", low, 1))
	s.Put(alert("globex", "g2", "x", "off_hours", low, 2))
	for i := range 1000 {
		s.Put(alert("acme", fmt.Sprintf("a%04d", i), "x", "off_hours", low, 3+i))
	}
	if s.Len() != 5 {
		t.Fatalf("Len = %d, want 5 (3 of acme, 2 of globex)", s.Len())
	}
	got, _, _ := s.List(alerts.Query{Tenant: "globex"})
	if !slices.Equal(ids(got), []string{"g2", "g1"}) {
		t.Fatalf("globex kept %v after acme's flood, want [g2 g1]", ids(got))
	}
	got, _, _ = s.List(alerts.Query{Tenant: "acme"})
	if !slices.Equal(ids(got), []string{"a0999", "a0998", "a0997"}) {
		t.Fatalf("acme kept %v, want its newest three", ids(got))
	}
	if s.Put(alert("acme", "old", "x", "off_hours", low, 0)); len(mustList(t, s, "acme")) != 3 {
		t.Fatal("acme holds more than its bound")
	}
	if _, ok := s.Get("acme", "old"); ok {
		t.Fatal("an alert older than every kept one was kept beyond the bound")
	}
}

func mustList(t *testing.T, s *alerts.Store, tenant string) []*monitorv1.Alert {
	t.Helper()
	got, _, err := s.List(alerts.Query{Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
