package observability_test

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/agentid/agentid/pkg/observability"
)

func TestSetupPropagatesW3CTraceContext(t *testing.T) {
	if _, err := observability.Setup(context.Background(), observability.TracingConfig{}); err == nil {
		t.Fatal("Setup without a service name succeeded")
	}
	shutdown, err := observability.Setup(context.Background(), observability.TracingConfig{ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := otel.Tracer("test").Start(context.Background(), "op")
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	span.End()
	tp := carrier.Get("traceparent")
	if !strings.HasPrefix(tp, "00-"+span.SpanContext().TraceID().String()+"-") {
		t.Fatalf("traceparent %q does not carry the span's trace id %s", tp, span.SpanContext().TraceID())
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}
