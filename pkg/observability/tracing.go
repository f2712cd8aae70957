// Package observability sets up OpenTelemetry tracing for a process: W3C trace-context propagation
// across gRPC calls (and into events, see grpcx.EventMetadata) and, when an OTLP endpoint is
// configured, export of the spans.
package observability

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// TracingConfig configures Setup.
type TracingConfig struct {
	// ServiceName names the process in traces ("agentid-dev", "registry", ...).
	ServiceName string
	// OTLPEndpoint is the host:port of an OTLP/gRPC collector; empty keeps spans in the process
	// (trace and span ids still propagate, so logs and events correlate).
	OTLPEndpoint string
	// Insecure sends OTLP without TLS (a collector on loopback or in the same pod).
	Insecure bool
}

// Setup installs the global tracer provider and the W3C trace-context and baggage propagators. The
// returned function flushes and stops the exporter; call it on shutdown.
func Setup(ctx context.Context, cfg TracingConfig) (func(context.Context) error, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("observability: ServiceName is required")
	}
	res := resource.NewSchemaless(semconv.ServiceName(cfg.ServiceName))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.OTLPEndpoint != "" {
		eo := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.Insecure {
			eo = append(eo, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, eo...)
		if err != nil {
			return nil, fmt.Errorf("observability: OTLP exporter for %s: %w", cfg.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}
