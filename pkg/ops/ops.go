// Package ops serves the operational endpoints every esflow service has:
// /healthz (liveness), /readyz (readiness) and /metrics (Prometheus), and
// runs HTTP servers with graceful shutdown.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check returns nil when healthy, else the reason.
type Check func(ctx context.Context) error

// Handler returns a mux with /healthz (all live checks pass), /readyz (all
// ready checks pass) and /metrics (the registry's metrics). Failing checks
// answer 503 with a JSON body naming the failure.
func Handler(reg *prometheus.Registry, live, ready map[string]Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", checks(live))
	mux.Handle("GET /readyz", checks(ready))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

func checks(cs map[string]Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, body := http.StatusOK, map[string]string{}
		for name, c := range cs {
			if err := c(ctx); err != nil {
				status = http.StatusServiceUnavailable
				body[name] = err.Error()
			} else {
				body[name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// NewRegistry returns a Prometheus registry with the Go runtime and
// process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve runs an HTTP server on addr until ctx is cancelled, then shuts it
// down gracefully, letting in-flight requests finish within grace. ready,
// when not nil, receives the bound address once listening (useful with
// port 0).
func Serve(ctx context.Context, addr string, h http.Handler, grace time.Duration, log *slog.Logger, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("ops: serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("ops: shutdown %s: %w", addr, err)
	}
	if log != nil {
		log.Info("http server stopped", "addr", ln.Addr().String())
	}
	return nil
}
