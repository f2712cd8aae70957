package app_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkTokenIssuance issues tokens through the HTTP handler in-process: form parsing, assertion
// verification, the replay check in JetStream KV, signing and the telemetry hand-off. Assertions are
// signed before the timer starts, so the client's signing cost is not measured.
func BenchmarkTokenIssuance(b *testing.B) {
	r := startIssuer(b)
	c := newTestClient(b, "acme", "bench-agent")
	c.register(b, r, "orders.read", "orders.write")
	h := r.app.HTTPHandler()
	url := r.base + "/t/acme/oauth2/token"

	bodies := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = tokenForm(c.assertion(b, r), "scope", "orders.read").Encode()
		}
		return out
	}
	issue := func(b *testing.B, body string) {
		req := httptest.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("token request: %d %s", rec.Code, rec.Body)
		}
	}

	b.Run("serial", func(b *testing.B) {
		all := bodies(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			issue(b, all[i])
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		b.ReportMetric(float64(r.app.TelemetryDropped()), "telemetry-dropped")
	})
	b.Run("parallel", func(b *testing.B) {
		all := bodies(b.N)
		next := make(chan string, len(all))
		for _, body := range all {
			next <- body
		}
		close(next)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				issue(b, <-next)
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		b.ReportMetric(float64(r.app.TelemetryDropped()), "telemetry-dropped")
	})
}
