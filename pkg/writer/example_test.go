package writer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// Mount the writer's handler in your own service, here under /writer/
// next to a route of your own.
func Example() {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{
		DatabaseURL: "sqlite::memory:", Registry: reg, CreateTables: true,
		Outbox: &outbox.Builder{}, // every save also queues its Kafka messages
	})
	if err != nil {
		panic(err)
	}
	defer app.Close()
	srv, err := writer.New(writer.Config{App: app, Token: "s3cret"})
	if err != nil {
		panic(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/writer/", http.StripPrefix("/writer", srv.Handler()))
	mux.HandleFunc("/hello", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	ts := httptest.NewServer(mux)
	defer ts.Close()

	req, _ := http.NewRequest("POST", ts.URL+"/writer/v1/worlds", strings.NewReader(`{"ruler":"gods"}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println("create:", res.Status)

	backlog, _ := app.Outbox().Backlog(ctx, outbox.Shard{})
	fmt.Println("messages waiting for the relay:", backlog.Messages)
	// Output:
	// create: 201 Created
	// messages waiting for the relay: 1
}
