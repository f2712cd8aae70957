package app_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentid/agentid/pkg/testkit"

	"github.com/agentid/agentid/services/issuer/app"
)

// BenchmarkTokenIssuanceRateLimits is BenchmarkTokenIssuance's parallel case with the per-address
// and per-client limiters off and on (rates high enough never to refuse): the limiters' cost within
// a whole token request.
func BenchmarkTokenIssuanceRateLimits(b *testing.B) {
	for _, bc := range []struct {
		name   string
		limits app.RateLimits
	}{
		{name: "limits=off"},
		{name: "limits=on", limits: app.RateLimits{PerIP: 1e9, PerIPBurst: 1e9, PerClient: 1e9, PerClientBurst: 1e9}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := launchReplicaWith(b, testkit.StartNATS(b), "", func(cfg *app.Config) { cfg.RateLimits = bc.limits })
			r.waitReady(b)
			c := newTestClient(b, "acme", "bench-agent")
			c.register(b, r, "orders.read")
			h := r.app.HTTPHandler()
			url := r.base + "/t/acme/oauth2/token"
			next := make(chan string, b.N)
			for range b.N {
				next <- tokenForm(c.assertion(b, r), "scope", "orders.read").Encode()
			}
			close(next)
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodPost, url, strings.NewReader(<-next))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatalf("token request: %d %s", rec.Code, rec.Body)
					}
				}
			})
			b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/token")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
