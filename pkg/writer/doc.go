// Package writer is the esflow writer service's HTTP JSON API over an
// [application.Application]: the part of cmd/writer (and of the embedded
// all-in-one command) that a user could also mount in their own service.
//
//	app, _ := application.New(ctx, application.Config{DatabaseURL: url, Outbox: &outbox.Builder{}, CreateTables: true})
//	srv, _ := writer.New(writer.Config{App: app, Token: os.Getenv("WRITER_TOKEN")})
//	srv.Handle("POST", "/v1/orders", placeOrder) // your own endpoints
//	http.ListenAndServe(":8080", srv.Handler())
//
// Every write goes through the application's transactional outbox: the
// events and their Kafka messages commit together, and a relay (package
// relay, in-process or cmd/relay) publishes them.
//
// # Endpoints
//
// openapi.yaml beside this file (served at /openapi.yaml) describes them all:
//
//   - the generic stream API, for any language: POST /v1/streams (a new
//     stream under an id the server picks), POST and GET
//     /v1/streams/{id}/events (append with an expected version, read
//     with paging), GET /v1/streams/{id}/head (version and head hash);
//     a stream's version is a count of its events, an event's version is
//     0-based;
//     DESIGN.md explains how generic events map onto the store;
//   - GET /v1/notifications[/{section}], the notification log in the format
//     of [application.LogHandler], so an [application.RemoteLog] can follow it
//     (?decode=json adds each unencrypted event's type and JSON payload);
//   - nothing of any domain: a service mounts its own endpoints with
//     [Server.Handle], and serves an event-sourced aggregate type with
//     [NewAggregates] (create, load, command with an optional expected
//     version from the body or If-Match, 409 when the aggregate moved on,
//     404 / 410). cmd/writer and cmd/esflow mount the seeds' example domain
//     (/v1/worlds, /v1/examples) this way, from package examples/domainapi;
//     package examples/todo/todoapi is a second, smaller example;
//   - GET /, the operations console (embedded files under /console/,
//     polling GET /v1/console/stats; live charts, a stream browser with a
//     hash-chain check, the notification log, projections from
//     Config.Projections with a re-drive that needs the token; DESIGN.md
//     says how and why), GET /v1/activity, /healthz, /readyz, /metrics.
//
// # Errors
//
// Every error is a JSON object {"error": "..."}; conflicts add
// "current_version". A bad request (malformed JSON, unknown field, wrong
// type, missing field, bad UUID) is 400, a body over Config.MaxBodyBytes
// 413, an unknown aggregate 404, a discarded one 410, a missing or wrong
// bearer token 401, a generic append naming a domain type or stream 422;
// none of them writes anything. A database that cannot be
// used for now is 503 with Retry-After: the writer matches only sentinels,
// eventstore.ErrUnavailable (to which each backend translates its driver's
// errors: connection refused or lost, too many connections, server shutting
// down, deadlock, serialization failure, lock timeout, SQLite busy) and
// eventstore.ErrClosed. The next request uses a fresh connection, so the
// service recovers by itself. Anything else is a 500 whose detail is
// logged, never sent.
//
// # Operations
//
// Each response carries X-Request-ID (the client's, or a new one). Each
// request is logged (slog, message "http request") and counted in
// esflow_writer_http_requests_total{route,method,code} and
// esflow_writer_http_request_duration_seconds{route}.
//
// Each request is also a server span named after its route (OpenTelemetry
// API, Config.TracerProvider or the global provider), continuing the
// caller's trace as Config.Propagator reads it from the headers; the
// application's save spans are its children.
package writer
