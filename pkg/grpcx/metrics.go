package grpcx

import (
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

type metrics struct {
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "RPCs completed on the server, by method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Time from the start of an RPC to its completion on the server.",
			Buckets: prometheus.DefBuckets,
		}, []string{"grpc_service", "grpc_method"}),
	}
	m.handled = register(reg, m.handled)
	m.duration = register(reg, m.duration)
	return m
}

// register registers c, or reuses an identical collector registered earlier (a second server in
// the same process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

func (m *metrics) observe(fullMethod string, code codes.Code, elapsed time.Duration) {
	service, method := splitMethod(fullMethod)
	m.handled.WithLabelValues(service, method, code.String()).Inc()
	m.duration.WithLabelValues(service, method).Observe(elapsed.Seconds())
}

func splitMethod(fullMethod string) (service, method string) {
	s, m, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return s, m
}
