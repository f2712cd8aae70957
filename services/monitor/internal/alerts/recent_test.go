package alerts_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/alerts"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// TestRowsResentInAnotherEventAreJudgedOnce: a row detection judged is not judged again when it
// comes back in another TELEMETRY event (a resent batch) within the TTL, but is when the same event
// is redelivered (never acknowledged), when the TTL has passed, or when the bound pushed it out.
func TestRowsResentInAnotherEventAreJudgedOnce(t *testing.T) {
	es := startStore(t)
	pub, _ := alerts.NewPublisher(es, quiet)
	now := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	var judged []string
	reg := prometheus.NewRegistry()
	rt, err := alerts.NewRuntime(alerts.RuntimeConfig{
		Detect: func(rows []store.Event) []*monitorv1.Alert {
			for _, r := range rows {
				judged = append(judged, r.EventID)
			}
			return nil
		},
		RecentRowsTTL: 10 * time.Minute, RecentRowsMax: 3, Now: func() time.Time { return now },
		Publisher: pub, Logger: quiet, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	row := func(id string, seq uint64) store.Event {
		return store.Event{EventID: id, StreamSeq: seq, Tenant: "acme", Agent: "tenants/acme/agents/a", Kind: store.KindAccess, Time: now}
	}
	step := func(name string, rows []store.Event, want ...string) {
		t.Helper()
		judged = nil
		rt.OnStored(t.Context(), rows)
		if len(judged) != len(want) {
			t.Fatalf("%s: judged %v, want %v", name, judged, want)
		}
		for i := range want {
			if judged[i] != want[i] {
				t.Fatalf("%s: judged %v, want %v", name, judged, want)
			}
		}
	}
	step("first delivery", []store.Event{row("r1", 7), row("r2", 7)}, "r1", "r2")
	step("the same event redelivered", []store.Event{row("r1", 7), row("r2", 7)}, "r1", "r2")
	step("resent in another event", []store.Event{row("r1", 9), row("r2", 9), row("r3", 9)}, "r3")
	if n, _ := gauge(t, reg, "monitor_detection_rows_resent_total", nil); n != 2 {
		t.Errorf("monitor_detection_rows_resent_total = %v, want 2", n)
	}
	step("rows without a sequence", []store.Event{row("r1", 0)}, "r1")
	now = now.Add(10 * time.Minute)
	step("resent after the TTL", []store.Event{row("r1", 11)}, "r1")
	step("three more push r1 out of a bound of 3", []store.Event{row("x1", 12), row("x2", 12), row("x3", 12)}, "x1", "x2", "x3")
	step("resent after being pushed out", []store.Event{row("r1", 13)}, "r1")
	other := row("r1", 14)
	other.Tenant = "globex"
	step("the same id in another tenant", []store.Event{other}, "r1")
	if n, _ := gauge(t, reg, "monitor_detection_rows_resent_total", nil); n != 2 {
		t.Errorf("a row of another tenant with a judged row's id counted as resent (%v)", n)
	}
}
