package app_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time (user + system) of this process so far: the issuer and the embedded
// NATS server it talks to.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTokenIssuance issues tokens through the HTTP handler in-process: form parsing, assertion
// verification, the replay check in JetStream KV, signing and the telemetry hand-off. Assertions are
// signed before the timer starts, so the client's signing cost is not measured. cpu-µs/token is the
// process's CPU time (issuer and embedded NATS, telemetry publishing included) per token.
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
		cpu := processCPU(b)
		for i := range b.N {
			issue(b, all[i])
		}
		b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/token")
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
		cpu := processCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				issue(b, <-next)
			}
		})
		b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/token")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		b.ReportMetric(float64(r.app.TelemetryDropped()), "telemetry-dropped")
	})
}
