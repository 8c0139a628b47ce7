// Package telemetry installs the OpenTelemetry SDK in the esflow commands.
// The libraries (pkg/...) use the OpenTelemetry API only, so that a
// program embedding them chooses its own SDK and exporter; the commands
// call [Setup] once at start and its shutdown on exit.
//
// Setup is driven by the standard OTEL_* environment variables:
//
//   - Tracing is on when OTEL_TRACES_EXPORTER=otlp, or when
//     OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
//     set and OTEL_TRACES_EXPORTER is not "none". With none of them set,
//     or OTEL_SDK_DISABLED=true, it is off: no SDK is installed and the
//     libraries' spans are the API's no-ops.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (or OTEL_EXPORTER_OTLP_PROTOCOL)
//     picks OTLP over HTTP ("http/protobuf", the default) or gRPC
//     ("grpc"). The exporters read their own variables (endpoint,
//     headers, timeout, TLS, compression: OTEL_EXPORTER_OTLP_*).
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES describe the process
//     (the service name defaults to the command's name);
//     OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_* tune sampling and
//     batching, read by the SDK.
//
// When on, Setup also sets the global propagator to W3C Trace Context and
// Baggage, so that the writer continues a caller's trace.
package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Setup installs a tracer provider exporting over OTLP as the OTEL_*
// variables say (see the package documentation), or nothing when they
// leave tracing off. shutdown flushes the spans still buffered and stops
// the exporter; it is never nil, so callers can always defer it.
func Setup(ctx context.Context, serviceName string) (shutdown func(context.Context) error, err error) {
	tp, err := newProvider(ctx, serviceName, os.Getenv)
	if err != nil || tp == nil {
		return func(context.Context) error { return nil }, err
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
		defer cancel()
		return tp.Shutdown(ctx)
	}, nil
}

// ShutdownTimeout bounds the flush of Setup's shutdown: a collector that
// does not answer cannot hold up a command's exit for longer.
const ShutdownTimeout = 5 * time.Second

// Protocols of OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL.
const (
	protocolHTTP = "http/protobuf"
	protocolGRPC = "grpc"
)

// enabled reports whether the environment turns tracing on.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q is not supported (want otlp or none)", exp)
	}
}

// protocol returns the OTLP protocol the environment asks for.
func protocol(getenv func(string) string) (string, error) {
	p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch p {
	case "", protocolHTTP:
		return protocolHTTP, nil
	case protocolGRPC:
		return protocolGRPC, nil
	}
	return "", fmt.Errorf("telemetry: OTLP protocol %q is not supported (want %s or %s)", p, protocolHTTP, protocolGRPC)
}

// newProvider builds the SDK's tracer provider, or returns nil when
// tracing is off. The exporters connect lazily: an unreachable collector
// costs dropped spans (reported through otel's error handler), never a
// failed start.
func newProvider(ctx context.Context, serviceName string, getenv func(string) string) (*sdktrace.TracerProvider, error) {
	on, err := enabled(getenv)
	if err != nil || !on {
		return nil, err
	}
	proto, err := protocol(getenv)
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	switch proto {
	case protocolGRPC:
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP %s exporter: %w", proto, err)
	}
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the command's name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
