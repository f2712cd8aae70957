package discovery_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/discovery"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

type wantIdentity struct {
	kind        registryv1.FindingKind
	value       string // client id, or redacted key
	count       int64
	first, last string
	paths       []string
}

func TestLogAggregation(t *testing.T) {
	tests := []struct {
		name                string
		file                string
		format              registryv1.LogFormat
		wantParsed, wantBad int64
		want                []wantIdentity
		secrets             []string
	}{
		{
			name: "nginx", file: "testdata/logs/nginx.log", format: registryv1.LogFormat_LOG_FORMAT_NGINX,
			wantParsed: 7, wantBad: 3,
			want: []wantIdentity{
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_API_KEY, "key_…", 2, "2026-11-30T08:18:22Z", "2026-11-30T08:19:22Z", []string{"/v1/reports", "/v1/reports/7"}},
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_CLIENT, "agt_01jq3v5x7k9m2n4p6r8t0vwxyz", 2, "2026-11-30T08:15:02Z", "2026-11-30T08:15:09Z", []string{"/v1/invoices"}},
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_CLIENT, "shadow-bot", 2, "2026-11-30T08:16:40Z", "2026-11-30T08:17:01Z", []string{"/v1/customers/42", "/v1/customers/43"}},
			},
			secrets: []string{"key_live_Pl4ntedGatewayApiKey77"},
		},
		{
			name: "envoy", file: "testdata/logs/envoy.log", format: registryv1.LogFormat_LOG_FORMAT_ENVOY,
			wantParsed: 5, wantBad: 4,
			want: []wantIdentity{
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_CLIENT, "shadow-bot", 2, "2026-11-30T08:15:02.123Z", "2026-11-30T08:21:44.9Z", []string{"/v1/tickets"}},
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_API_KEY, "key_…", 1, "2026-11-30T08:22:00Z", "2026-11-30T08:22:00Z", []string{"/v1/kb/search"}},
				{registryv1.FindingKind_FINDING_KIND_GATEWAY_CLIENT, "jwt-only-client", 1, "2026-11-30T08:23:00Z", "2026-11-30T08:23:00Z", []string{"/v1/kb/1"}},
			},
			secrets: []string{"key_live_EnvoyPl4ntedKey123456"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := os.Open(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			agg, err := discovery.NewLogAggregator(tt.format, "gw.log")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := agg.ReadFrom(f); err != nil {
				t.Fatal(err)
			}
			if agg.Parsed != tt.wantParsed || agg.Malformed != tt.wantBad {
				t.Errorf("parsed %d malformed %d, want %d and %d", agg.Parsed, agg.Malformed, tt.wantParsed, tt.wantBad)
			}
			got := agg.Findings()
			if len(got) != len(tt.want) {
				t.Fatalf("%d findings, want %d: %v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.GetKind() != w.kind || g.GetRedactedValue() != w.value || g.GetCount() != w.count ||
					g.GetFirstSeen().AsTime().Format(time.RFC3339Nano) != w.first || g.GetLastSeen().AsTime().Format(time.RFC3339Nano) != w.last ||
					strings.Join(g.GetPaths(), ",") != strings.Join(w.paths, ",") {
					t.Errorf("finding %d = %v %q count %d %s..%s %v, want %+v", i, g.GetKind(), g.GetRedactedValue(), g.GetCount(),
						g.GetFirstSeen().AsTime().Format(time.RFC3339Nano), g.GetLastSeen().AsTime().Format(time.RFC3339Nano), g.GetPaths(), w)
				}
				if !g.GetGhost() || g.GetFile() != "gw.log" || !discovery.CheckID(g) {
					t.Errorf("finding %d: ghost %v file %q id ok %v", i, g.GetGhost(), g.GetFile(), discovery.CheckID(g))
				}
			}
			var out bytes.Buffer
			if err := discovery.WriteTable(&out, got); err != nil {
				t.Fatal(err)
			}
			if err := discovery.WriteJSON(&out, got, nil); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.secrets {
				if strings.Contains(out.String(), s[4:]) {
					t.Errorf("output shows the API key %.4s… beyond its prefix", s)
				}
			}
			if strings.Contains(out.String(), "eyJ") {
				t.Error("output shows a bearer token")
			}
		})
	}
}

func TestLogAggregatorOverlongLine(t *testing.T) {
	agg, err := discovery.NewLogAggregator(registryv1.LogFormat_LOG_FORMAT_ENVOY, "x")
	if err != nil {
		t.Fatal(err)
	}
	long := `{"start_time":"2026-11-30T08:22:00Z","path":"/` + strings.Repeat("a", discovery.MaxLogLine) + `","client_id":"c"}`
	in := long + "\n" + `{"start_time":"2026-11-30T08:22:00Z","path":"/ok","client_id":"c"}` + "\n"
	if _, err := agg.ReadFrom(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if agg.Malformed != 1 || agg.Parsed != 1 {
		t.Errorf("parsed %d malformed %d, want 1 and 1", agg.Parsed, agg.Malformed)
	}
}

func TestParserForUnknownFormat(t *testing.T) {
	if _, err := discovery.NewLogAggregator(registryv1.LogFormat_LOG_FORMAT_UNSPECIFIED, "x"); err == nil {
		t.Error("want an error for an unspecified format")
	}
}

func FuzzParseLogs(f *testing.F) {
	for _, s := range []string{
		`10.0.0.1 - - [30/Nov/2026:08:15:02 +0000] "GET / HTTP/1.1" 200 1 "-" "ua" "c" "k"`,
		`{"start_time":"2026-11-30T08:22:00Z","authorization":"Bearer a.b.c"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		for _, p := range []discovery.ParseLine{discovery.ParseNginx, discovery.ParseEnvoy} {
			_, _ = p(line)
		}
	})
}
