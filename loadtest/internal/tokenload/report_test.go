package tokenload_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenload"
)

func sampleReport() *tokenload.Report {
	lat := stats.NewHistogram()
	for i := 1; i <= 100; i++ {
		lat.Record(time.Duration(i) * 10 * time.Microsecond) // exact: below 2048µs
	}
	prov := stats.Summary{Count: 3, Min: 150 * time.Millisecond, Mean: 300 * time.Millisecond, P50: 310 * time.Millisecond,
		P90: 370 * time.Millisecond, P99: 370 * time.Millisecond, Max: 370 * time.Millisecond}
	rep := &tokenload.Report{
		Target: tokenload.Target{Server: "127.0.0.1:7070", Issuer: "http://127.0.0.1:8080/t/default",
			TokenURL: "http://127.0.0.1:8080/t/default/oauth2/token", Tenant: "default", CPUs: 2},
		Settings:     tokenload.Settings{Agents: 3, Concurrency: 2, DurationSeconds: 600, Requests: 102, Mode: "closed"},
		Provisioning: tokenload.Provisioning{Agents: 3, ElapsedSeconds: 0.8, RegisterToActive: prov, RegisterToToken: prov},
		Tokens: tokenload.TokensOf(tokenload.LoadResult{Requests: 102, OK: 100, Elapsed: 2 * time.Second, Latency: lat,
			Errors: map[string]int64{"invalid_client": 1, "transport_error": 1}}),
		Processes: []tokenload.Process{{PID: 42, Name: "agentid", StartRSSKiB: 102400, EndRSSKiB: 153600, PeakRSSKiB: 160000,
			LoadCPUSeconds: 1.5}},
	}
	rep.Tokens.GeneratorCPUSeconds = 0.5
	rep.Tokens.MachineCPUBusySeconds = 3.5
	return rep
}

func keys(t *testing.T, v any) []string {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v is not a JSON object", v)
	}
	return slices.Sorted(maps.Keys(m))
}

func TestReportJSONShape(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	summary := []string{"count", "max_ms", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms"}
	for _, tc := range []struct {
		path []string
		want []string
	}{
		{nil, []string{"processes", "provisioning", "settings", "target", "tokens"}},
		{[]string{"target"}, []string{"cpus", "issuer", "server", "tenant", "token_url"}},
		{[]string{"settings"}, []string{"agents", "concurrency", "duration_seconds", "mode", "presigned", "rate", "requests"}},
		{[]string{"provisioning"}, []string{"agents", "elapsed_seconds", "register_to_active", "register_to_token"}},
		{[]string{"provisioning", "register_to_active"}, summary},
		{[]string{"tokens"}, []string{"elapsed_seconds", "error_count", "errors", "generator_cpu_seconds", "latency", "machine_cpu_busy_seconds", "ok", "requests", "tokens_per_second"}},
		{[]string{"tokens", "latency"}, summary},
		{[]string{"tokens", "errors"}, []string{"invalid_client", "transport_error"}},
	} {
		var v any = doc
		for _, p := range tc.path {
			v = v.(map[string]any)[p]
		}
		if got := keys(t, v); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("keys of %s = %v, want %v", strings.Join(tc.path, "."), got, tc.want)
		}
	}
	tokens := doc["tokens"].(map[string]any)
	if tokens["requests"] != 102.0 || tokens["ok"] != 100.0 || tokens["error_count"] != 2.0 || tokens["tokens_per_second"] != 50.0 {
		t.Errorf("tokens = %v, want requests 102, ok 100, error_count 2, tokens_per_second 50", tokens)
	}
	lat := tokens["latency"].(map[string]any)
	if lat["p50_ms"] != 0.5 || lat["p99_ms"] != 0.99 || lat["max_ms"] != 1.0 || lat["count"] != 100.0 {
		t.Errorf("latency = %v, want p50 0.5ms, p99 0.99ms, max 1ms over 100 samples", lat)
	}
	procs := doc["processes"].([]any)
	if len(procs) != 1 || !reflect.DeepEqual(keys(t, procs[0]),
		[]string{"end_rss_kib", "load_cpu_seconds", "name", "peak_rss_kib", "pid", "start_rss_kib"}) {
		t.Errorf("processes = %v", procs)
	}
	var back tokenload.Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || !reflect.DeepEqual(&back, sampleReport()) {
		t.Errorf("JSON round trip differs: %v\n got %+v\nwant %+v", err, back, sampleReport())
	}
}

func TestEmptyErrorsAreAnObject(t *testing.T) {
	tok := tokenload.TokensOf(tokenload.LoadResult{Latency: stats.NewHistogram()})
	b, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"errors":{}`) || tok.TokensPerSecond != 0 {
		t.Errorf("TokensOf(empty) = %s, want errors {} and 0 tokens/s", b)
	}
}

func TestReportText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"3 agents, concurrency 2, 102 requests",
		"register → active", "p50 310ms", "register → first token",
		"102 (ok 100, errors 2)", "invalid_client 1, transport_error 1",
		"50.0 tokens/s", "p50 500µs  p90 900µs  p99 990µs  max 1ms",
		"pid 42 agentid", "RSS 100.0 MiB before, 150.0 MiB after, peak 156.2 MiB; CPU 1.50s during the token requests (0.75 cores), 15ms per token",
		"2 CPUs", "generator CPU", "0.50s during the token requests (0.25 cores)",
		"machine CPU", "3.50s during the token requests (1.75 cores) busy, all processes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}
