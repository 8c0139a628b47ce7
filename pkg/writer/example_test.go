package writer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// Mount the writer's handler in your own service, here under /writer/
// next to a route of your own, with an endpoint of your own mounted on the
// writer (token check, access log and metrics included). The writer itself
// brings only the generic stream API and the notification log.
func Example() {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
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

	srv.Handle("POST", "/v1/notes/{id}", func(w http.ResponseWriter, r *http.Request) error {
		id, err := writer.PathID(r)
		if err != nil {
			return err
		}
		writer.WriteJSON(w, http.StatusAccepted, map[string]string{"note": id.String()})
		return nil
	})

	mux := http.NewServeMux()
	mux.Handle("/writer/", http.StripPrefix("/writer", srv.Handler()))
	mux.HandleFunc("/hello", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	ts := httptest.NewServer(mux)
	defer ts.Close()

	post := func(path, body string) string {
		req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		res.Body.Close()
		return res.Status
	}
	fmt.Println("append:", post("/writer/v1/streams/6f1c0c3e-2b1a-4c4e-9a43-0d6f2f1b9e10/events",
		`{"expected_version":0,"aggregate_type":"Note","events":[{"type":"NoteTaken","data":{"text":"hi"}}]}`))
	fmt.Println("own endpoint:", post("/writer/v1/notes/6f1c0c3e-2b1a-4c4e-9a43-0d6f2f1b9e10", ""))
	fmt.Println("no example domain:", post("/writer/v1/worlds", `{"ruler":"gods"}`))

	backlog, _ := app.Outbox().Backlog(ctx, outbox.Shard{})
	fmt.Println("messages waiting for the relay:", backlog.Messages)
	// Output:
	// append: 201 Created
	// own endpoint: 202 Accepted
	// no example domain: 404 Not Found
	// messages waiting for the relay: 1
}
