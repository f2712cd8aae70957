package observability_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/observability"
)

func TestRegisterReusesTheFirstCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "things_total", Help: "Things."}
	first := observability.Register(reg, prometheus.NewCounter(opts))
	second := observability.Register(reg, prometheus.NewCounter(opts))
	if first != second {
		t.Fatal("a second identical collector was not replaced by the registered one")
	}
	second.Inc()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Fatalf("gathered %v, %v; want one counter at 1", mfs, err)
	}
}
