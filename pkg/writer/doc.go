// Package writer is the esflow writer service's HTTP JSON API over an
// [application.Application]: the part of cmd/writer (and of the embedded
// all-in-one command) that a user could also mount in their own service.
//
//	app, _ := application.New(ctx, application.Config{DatabaseURL: url, Outbox: &outbox.Builder{}, CreateTables: true})
//	srv, _ := writer.New(writer.Config{App: app, Token: os.Getenv("WRITER_TOKEN")})
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
//   - the generic stream API, for any language: POST and GET
//     /v1/streams/{id}/events (append with an expected version, read
//     with paging), GET /v1/streams/{id}/head (version and head hash);
//     DESIGN.md explains how generic events map onto the store;
//   - GET /v1/notifications[/{section}], the notification log in the format
//     of [application.LogHandler], so an [application.RemoteLog] can follow it;
//   - the example domain's commands (package examples/domain): /v1/worlds
//     and /v1/examples, with an optional expected version (body
//     "expected_version" or If-Match) and 409 when the aggregate moved on;
//   - GET / (a small page showing recent events per stream and the relay
//     backlog, polling GET /v1/activity), /healthz, /readyz, /metrics.
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
package writer
