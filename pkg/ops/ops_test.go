package ops_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/ops"
)

func TestEndpointsAndShutdown(t *testing.T) {
	ready := errors.New("catching up")
	h := ops.Handler(ops.NewRegistry(),
		map[string]ops.Check{"loop": func(context.Context) error { return nil }},
		map[string]ops.Check{"db": func(context.Context) error { return ready }})
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, "127.0.0.1:0", h, time.Second, nil, func(a net.Addr) { addrc <- a }) }()
	base := "http://" + (<-addrc).String()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d (%s)", path, resp.StatusCode, want, body)
		}
		if path == "/readyz" && !strings.Contains(string(body), "catching up") {
			t.Errorf("readyz body %s lacks the reason", body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "go_goroutines") {
			t.Errorf("metrics lack the Go collector")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	if err := ops.Serve(context.Background(), "256.0.0.1:bad", h, time.Second, nil, nil); err == nil {
		t.Fatal("bad address accepted")
	}
}
