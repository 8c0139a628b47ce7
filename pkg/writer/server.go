package writer

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/ops"
)

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 1 << 20

// Config configures a [Server].
type Config struct {
	// App is the application the server writes to and reads from. It is
	// required and must have been built with application.Config.Outbox set,
	// so that every save also writes its Kafka messages. The server mounts
	// no domain of its own: a service adds its endpoints with
	// [Server.Handle] (and [NewAggregates] for event-sourced aggregates).
	App *application.Application
	// Token, when set, is the bearer token every mutating request must
	// present (Authorization: Bearer <token>). Reads stay open.
	Token string
	// MaxBodyBytes limits request bodies; larger ones get 413.
	// Default DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// Logger receives the access log and error details. Default slog.Default().
	Logger *slog.Logger
	// Registry is where the server's metrics are registered, and what
	// /metrics serves. Default: a new ops.NewRegistry().
	Registry *prometheus.Registry
	// Ready holds extra readiness checks served by /readyz next to the
	// database ping, e.g. an in-process relay's liveness.
	Ready map[string]ops.Check
	// Projections, when set, feeds the console's projection status, lag
	// charts and dead-letter re-drive. Default none.
	Projections Projections
	// TracerProvider receives a server span per request, named after its
	// route ("POST /v1/streams/{id}/events"); handlers get it in their
	// context, so the application's save spans are its children.
	// Default: the global provider, otel.GetTracerProvider(), a no-op
	// until the program installs an SDK.
	TracerProvider trace.TracerProvider
	// Propagator reads the caller's trace context from the request
	// headers. Default: the global one, otel.GetTextMapPropagator()
	// (which propagates nothing until the program sets one).
	Propagator propagation.TextMapPropagator
}

// Server is the writer's HTTP API over an application. Build it with
// [New] and serve [Server.Handler].
type Server struct {
	app         *application.Application
	token       string
	maxBody     int64
	log         *slog.Logger
	reg         *prometheus.Registry
	metrics     *metrics
	codec       *codec
	routes      []route
	mux         *http.ServeMux
	ops         http.Handler
	page        *template.Template
	projections Projections
	handler     http.Handler
	tracer      trace.Tracer
	propagator  propagation.TextMapPropagator
}

// route is one endpoint: the method and path pattern (http.ServeMux
// syntax, and the OpenAPI path), whether it changes anything (and so needs
// the token), and the handler.
type route struct {
	method   string
	path     string
	mutating bool
	handle   func(w http.ResponseWriter, r *http.Request) error
}

// openAPI is the description of the API served at /openapi.yaml.
//
//go:embed openapi.yaml
var openAPI []byte

// New builds a server. It fails when cfg.App is missing or has no outbox.
func New(cfg Config) (*Server, error) {
	if cfg.App == nil {
		return nil, errors.New("writer: Config.App is required")
	}
	if !cfg.App.Store.HasOutbox() || cfg.App.Outbox() == nil {
		return nil, errors.New("writer: the application needs an outbox (application.Config.Outbox)")
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("writer: negative MaxBodyBytes %d", cfg.MaxBodyBytes)
	}
	s := &Server{
		app: cfg.App, token: cfg.Token, maxBody: cfg.MaxBodyBytes, log: cfg.Logger, reg: cfg.Registry,
		mux: http.NewServeMux(), projections: cfg.Projections,
		tracer: tracerFrom(cfg.TracerProvider), propagator: cfg.Propagator,
	}
	if s.propagator == nil {
		s.propagator = otel.GetTextMapPropagator()
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = ops.NewRegistry()
	}
	var err error
	if s.metrics, err = newMetrics(s.reg); err != nil {
		return nil, err
	}
	if s.page, err = template.ParseFS(consoleFiles, "console/index.html"); err != nil {
		return nil, fmt.Errorf("writer: page template: %w", err)
	}
	s.codec = newCodec(s.app.Store)

	ready := map[string]ops.Check{"database": func(ctx context.Context) error {
		_, err := s.app.Recorder().MaxNotificationID(ctx)
		return err
	}}
	for name, c := range cfg.Ready {
		ready[name] = c
	}
	s.ops = ops.Handler(s.reg, map[string]ops.Check{}, ready)

	s.routes = s.routeTable()
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.pattern(), s.wrap(rt))
	}
	s.mux.Handle("/", http.HandlerFunc(s.unmatched))
	s.handler = s.middleware(s.mux)
	return s, nil
}

// pattern is the ServeMux pattern of the route: "/" matches only itself.
func (rt route) pattern() string {
	if rt.path == "/" {
		return "/{$}"
	}
	return rt.path
}

func (s *Server) routeTable() []route {
	opsRoute := func(w http.ResponseWriter, r *http.Request) error { s.ops.ServeHTTP(w, r); return nil }
	return []route{
		{method: "GET", path: "/", handle: s.handlePage},
		{method: "GET", path: "/healthz", handle: opsRoute},
		{method: "GET", path: "/readyz", handle: opsRoute},
		{method: "GET", path: "/metrics", handle: opsRoute},
		{method: "GET", path: "/openapi.yaml", handle: s.handleOpenAPI},
		{method: "GET", path: "/v1/activity", handle: s.handleActivity},
		{method: "GET", path: "/console/{file}", handle: s.handleConsoleFile},
		{method: "GET", path: "/v1/console/stats", handle: s.handleConsoleStats},
		{method: "GET", path: "/v1/console/streams", handle: s.handleConsoleStreams},
		{method: "GET", path: "/v1/console/streams/{id}/verify", handle: s.handleVerify},
		{method: "POST", path: "/v1/console/projections/{name}/redrive", mutating: true, handle: s.handleRedrive},

		{method: "POST", path: "/v1/streams", mutating: true, handle: s.handleCreateStream},
		{method: "POST", path: "/v1/streams/{id}/events", mutating: true, handle: s.handleAppend},
		{method: "GET", path: "/v1/streams/{id}/events", handle: s.handleReadStream},
		{method: "GET", path: "/v1/streams/{id}/head", handle: s.handleHead},
		{method: "GET", path: "/v1/notifications", handle: s.handleNotifications},
		{method: "GET", path: "/v1/notifications/{section}", handle: s.handleNotifications},
	}
}

// Handler returns the server's HTTP handler: the API under /v1, the web
// page at /, /openapi.yaml, and /healthz, /readyz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// wrap turns a route into a handler: it names the route for the access
// log and metrics, checks the token on mutating routes and answers the
// handler's error.
func (s *Server) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info := infoFrom(r.Context()); info != nil {
			info.route = label
		}
		if rt.mutating && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="esflow-writer"`)
			s.fail(w, r, &httpError{status: http.StatusUnauthorized, msg: "missing or wrong bearer token"})
			return
		}
		if err := rt.handle(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if s.token == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.token)) == 1
}

// unmatched answers requests no route takes: 405 with Allow when the path
// exists for other methods, else 404, both with a JSON body.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.fail(w, r, &httpError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path)})
		return
	}
	s.fail(w, r, notFound("no such endpoint: %s %s", r.Method, r.URL.Path))
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, err := w.Write(openAPI)
	return err
}
