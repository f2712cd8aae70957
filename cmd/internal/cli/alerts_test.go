package cli_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
)

// monitorService fakes MonitorService's alert and baseline reads and remembers the requests.
type monitorService struct {
	monitorv1.UnimplementedMonitorServiceServer
	alerts []*monitorv1.Alert

	mu        sync.Mutex
	lists     []*monitorv1.ListAlertsRequest
	baselines []*monitorv1.GetBaselineRequest
}

func (f *monitorService) ListAlerts(_ context.Context, req *monitorv1.ListAlertsRequest) (*monitorv1.ListAlertsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req)
	// One alert per page, to exercise paging.
	i := 0
	if req.GetPageToken() != "" {
		i = int(req.GetPageToken()[0] - '0')
	}
	resp := &monitorv1.ListAlertsResponse{Alerts: f.alerts[i : i+1]}
	if i+1 < len(f.alerts) {
		resp.NextPageToken = string(rune('0' + i + 1))
	}
	return resp, nil
}

func (f *monitorService) GetAlert(_ context.Context, req *monitorv1.GetAlertRequest) (*monitorv1.GetAlertResponse, error) {
	for _, a := range f.alerts {
		if a.GetName() == req.GetName() {
			return &monitorv1.GetAlertResponse{Alert: a}, nil
		}
	}
	return nil, errs.NotFound("ALERT_NOT_FOUND", "alert not found")
}

func (f *monitorService) GetBaseline(_ context.Context, req *monitorv1.GetBaselineRequest) (*monitorv1.GetBaselineResponse, error) {
	f.mu.Lock()
	f.baselines = append(f.baselines, req)
	f.mu.Unlock()
	b := &monitorv1.Baseline{Agent: req.GetAgent(), ClassKey: "analytics|prod|reports.read", Events: 5000,
		ActiveHours: []int32{8, 9, 10}, RowsMedian: 120, RowsMad: 40, Resources: []*monitorv1.UsageCount{{Value: "/reports", Count: 4000}}}
	for h := range int32(168) {
		b.Hourly = append(b.Hourly, &monitorv1.HourOfWeekStats{HourOfWeek: h, Median: 10, Mad: 2, Samples: 4})
	}
	start := req.GetActivityStart().AsTime().Truncate(time.Hour)
	return &monitorv1.GetBaselineResponse{Baseline: b, Activity: []*monitorv1.HourlyActivity{
		{Hour: timestamppb.New(start.Add(time.Hour)), Requests: 12},
		{Hour: timestamppb.New(start.Add(5 * time.Hour)), Requests: 900, Denied: 3},
	}}, nil
}

func serveMonitor(t *testing.T, dir string) *monitorService {
	t.Helper()
	detect := timestamppb.New(time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC))
	f := &monitorService{alerts: []*monitorv1.Alert{
		{Name: "tenants/default/alerts/a1", AlertId: "a1", Tenant: "default", Agent: "tenants/default/agents/etl",
			Detector: "bulk_export", Severity: monitorv1.AlertSeverity_ALERT_SEVERITY_CRITICAL, Summary: "412000 rows at 03:00", DetectTime: detect,
			Evidence: []*monitorv1.AlertEvidence{{Metric: "rows_per_request", Baseline: 120, Observed: 412000, Score: 9.5, Threshold: 40}}},
		{Name: "tenants/default/alerts/a2", AlertId: "a2", Tenant: "default", Agent: "ghost", Detector: "unknown_agent",
			Severity: monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH, DetectTime: detect},
	}}
	serveServices(t, dir, func(srv *grpc.Server) { monitorv1.RegisterMonitorServiceServer(srv, f) })
	return f
}

func TestAlertsListSendsTheFiltersAndPages(t *testing.T) {
	dir := t.TempDir()
	f := serveMonitor(t, dir)
	code, stdout, stderr := run(t, dir, "alerts", "list", "--agent", "etl", "--detector", "bulk_export", "--min-severity", "high", "--since", "7d", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 2 || got[0]["alertId"] != "a1" || got[1]["alertId"] != "a2" {
		t.Fatalf("output %s (%v): want both pages' alerts", stdout, err)
	}
	if len(f.lists) != 2 {
		t.Fatalf("%d ListAlerts calls, want 2 (two pages)", len(f.lists))
	}
	req := f.lists[0]
	since := req.GetStartTime().AsTime()
	if req.GetParent() != "tenants/default" || req.GetAgent() != "tenants/default/agents/etl" || req.GetDetector() != "bulk_export" ||
		req.GetMinSeverity() != monitorv1.AlertSeverity_ALERT_SEVERITY_HIGH || time.Since(since) < 7*24*time.Hour-time.Minute || time.Since(since) > 7*24*time.Hour+time.Hour {
		t.Fatalf("request = %v", req)
	}
	if f.lists[1].GetPageToken() != "1" {
		t.Fatalf("second page token %q", f.lists[1].GetPageToken())
	}

	code, stdout, _ = run(t, dir, "alerts", "list", "--agent", "client:ghost")
	if code != 0 || f.lists[2].GetAgent() != "ghost" || !strings.Contains(stdout, "SEVERITY") || !strings.Contains(stdout, "critical") {
		t.Fatalf("exit %d, request %v, output %s", code, f.lists[2], stdout)
	}
}

func TestAlertsGetShowsTheEvidence(t *testing.T) {
	dir := t.TempDir()
	serveMonitor(t, dir)
	code, stdout, stderr := run(t, dir, "alerts", "get", "a1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"bulk_export", "critical", "rows_per_request: observed 412000, baseline 120", "tenants/default/agents/etl"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output does not show %q:\n%s", want, stdout)
		}
	}
	code, _, stderr = run(t, dir, "alerts", "get", "tenants/default/alerts/nope")
	if code != 1 || !strings.Contains(stderr, "NotFound") {
		t.Fatalf("unknown alert: exit %d, stderr %q", code, stderr)
	}
}

func TestAlertsBadFlagsAreRefusedBeforeCalling(t *testing.T) {
	dir := t.TempDir()
	f := serveMonitor(t, dir)
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"alerts", "list", "--min-severity", "urgent"}, `--min-severity "urgent": want one of low, medium, high, critical`},
		{[]string{"alerts", "list", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"alerts", "list", "--since", "-3d"}, `--since "-3d"`},
		{[]string{"alerts", "get", "a/b"}, "want tenants/{tenant}/alerts/{id} or a bare alert id"},
		{[]string{"monitor", "baseline", "etl", "--since", "0d"}, `--since "0d"`},
		{[]string{"monitor", "baseline"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		code, stdout, stderr := run(t, dir, tt.args...)
		if code != 1 || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q", tt.args, code, stdout, stderr, tt.wantErr)
		}
	}
	if len(f.lists)+len(f.baselines) != 0 {
		t.Fatal("a refused command called the server")
	}
}

func TestMonitorBaselineWritesAValidSVGChart(t *testing.T) {
	dir := t.TempDir()
	f := serveMonitor(t, dir)
	chart := filepath.Join(dir, "out.svg")
	code, stdout, stderr := run(t, dir, "monitor", "baseline", "etl", "--since", "2d", "--chart", chart)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if len(f.baselines) != 1 || f.baselines[0].GetAgent() != "tenants/default/agents/etl" || f.baselines[0].GetActivityStart() == nil {
		t.Fatalf("requests = %v", f.baselines)
	}
	for _, want := range []string{"analytics|prod|reports.read", "median 120, MAD 40", "/reports (4000)", "912 requests (3 denied) in 2 active hours"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output does not show %q:\n%s", want, stdout)
		}
	}
	raw, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	// It parses as XML, is an SVG, and has the band, the two lines and the axis labels.
	dec := xml.NewDecoder(strings.NewReader(string(raw)))
	counts := map[string]int{}
	var texts []string
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not valid XML: %v\n%s", err, raw)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			counts[tok.Name.Local]++
			if tok.Name.Local == "svg" && tok.Name.Space != "http://www.w3.org/2000/svg" {
				t.Fatalf("svg element in namespace %q", tok.Name.Space)
			}
			inText = tok.Name.Local == "text"
		case xml.CharData:
			if inText {
				texts = append(texts, string(tok))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if counts["svg"] != 1 || counts["polygon"] != 1 || counts["polyline"] != 2 {
		t.Fatalf("elements %v: want one svg, one band polygon, two polylines", counts)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"Requests per hour of tenants/default/agents/etl", "requests per hour", "time (UTC)", "1000", "baseline median ± 3 MAD"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart texts %q lack %q", all, want)
		}
	}
}
