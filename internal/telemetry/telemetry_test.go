package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		on, bad bool
	}{
		{env: nil},
		{env: map[string]string{"OTEL_SERVICE_NAME": "x"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, bad: true},
	} {
		on, err := enabled(func(k string) string { return c.env[k] })
		if on != c.on || (err != nil) != c.bad {
			t.Errorf("%v: on %v err %v, want on %v error %v", c.env, on, err, c.on, c.bad)
		}
	}
}

func TestProtocol(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, protocolHTTP},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, protocolGRPC},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, protocolHTTP},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, ""},
	} {
		got, err := protocol(func(k string) string { return c.env[k] })
		if got != c.want || (err != nil) != (c.want == "") {
			t.Errorf("%v: %q %v, want %q", c.env, got, err, c.want)
		}
	}
}

// Without OTEL_* variables Setup installs nothing and its shutdown works.
func TestSetupOff(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	tp, err := newProvider(context.Background(), "test", func(string) string { return "" })
	if tp != nil || err != nil {
		t.Fatalf("provider %v, %v", tp, err)
	}
	shutdown, err := Setup(context.Background(), "test")
	if err != nil || shutdown(context.Background()) != nil {
		t.Fatal(err)
	}
}

// exported is what a fake collector received: the service names and
// span names of the export requests.
type exported struct {
	mu       sync.Mutex
	services []string
	spans    []string
}

func (e *exported) add(req *collectortrace.ExportTraceServiceRequest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				e.services = append(e.services, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				e.spans = append(e.spans, sp.GetName())
			}
		}
	}
}

type grpcCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	got *exported
}

func (g grpcCollector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	g.got.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Spans reach an OTLP collector over HTTP and over gRPC as the standard
// variables direct, with the resource's service name from
// OTEL_SERVICE_NAME over the command's default.
func TestExport(t *testing.T) {
	var got exported
	httpCollector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		got.add(&req)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer httpCollector.Close()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, grpcCollector{got: &got})
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	for _, c := range []struct{ name, endpoint, protocol string }{
		{"http", httpCollector.URL, "http/protobuf"},
		{"grpc", "http://" + lis.Addr().String(), "grpc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": c.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": c.protocol,
				"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": "svc-" + c.name,
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			tp, err := newProvider(context.Background(), "default-name", func(k string) string { return env[k] })
			if err != nil || tp == nil {
				t.Fatalf("provider %v, %v", tp, err)
			}
			_, span := tp.Tracer("test").Start(context.Background(), "span-"+c.name)
			span.End()
			if err := tp.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			got.mu.Lock()
			defer got.mu.Unlock()
			if len(got.spans) == 0 || got.spans[len(got.spans)-1] != "span-"+c.name || got.services[len(got.services)-1] != "svc-"+c.name {
				t.Fatalf("collector got spans %v of services %v", got.spans, got.services)
			}
		})
	}
}
