package writer_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
)

// The main flows on PostgreSQL, each on a fresh database.
func TestPostgres(t *testing.T) {
	for name, flow := range map[string]func(*testing.T, *env){
		"world": worldFlow, "example": exampleFlow, "stream": streamFlow, "concurrency": concurrency,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			flow(t, newEnv(t, pgtest.NewDatabase(t)))
		})
	}
}

// TestPostgresOutage cuts the writer off its database: every connection is
// terminated (pg_terminate_backend) and new ones are refused. Requests get
// 503, never 500; once the database accepts connections again the writer
// serves requests without a restart.
func TestPostgresOutage(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	e := newEnv(t, dsn)
	id := e.createWorld("gods")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "before"})
	// Warm several pool connections, so that dead ones are left behind.
	for range 4 {
		e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil)
	}

	// The admin session works from the maintenance database: PostgreSQL
	// refuses to disallow connections to the current one.
	acfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := acfg.Database
	acfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, acfg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	allow := func(on bool) {
		t.Helper()
		sql := "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " WITH ALLOW_CONNECTIONS false"
		if on {
			sql = "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " WITH ALLOW_CONNECTIONS true"
		}
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	defer allow(true)
	var killed int
	if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1`, db).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("the writer held no connection to terminate")
	}

	for round := range 3 {
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/v1/worlds/" + id, ""},
			{"POST", "/v1/worlds/" + id + "/make-it-so", `{"what":"during"}`},
			{"POST", "/v1/worlds", `{"ruler":"x"}`},
			{"POST", "/v1/streams/" + id + "/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`},
			{"GET", "/v1/streams/" + id + "/head", ""},
			{"GET", "/v1/notifications", ""},
			{"GET", "/v1/activity", ""},
			{"GET", "/readyz", ""},
		} {
			var body any
			if c.body != "" {
				body = c.body
			}
			r := e.do(c.method, c.path, body)
			if r.status != http.StatusServiceUnavailable {
				t.Fatalf("round %d: %s %s while the database is unreachable: %d %s", round, c.method, c.path, r.status, r.raw)
			}
		}
	}

	allow(true)
	// Stale connections may still sit in the pool; each is discarded at its
	// first use. Within a bounded number of requests the writer serves again.
	ok := false
	for i := 0; i < 50 && !ok; i++ {
		r := e.do("POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "after"})
		switch r.status {
		case http.StatusOK:
			ok = true
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("after the outage: %d %s", r.status, r.raw)
		}
	}
	if !ok {
		t.Fatal("the writer did not recover within 50 requests")
	}
	w := e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil)
	if h := w.body["history"].([]any); w.num("version") != 3 || len(h) != 2 || h[1] != "after" {
		t.Fatalf("after the outage: %s (nothing of the refused requests may be stored)", w.raw)
	}
	e.must(http.StatusOK, "GET", "/readyz", nil)
	if st := e.state(); st.notifications != 3 || st.backlog != 3 {
		t.Fatalf("store after the outage: %+v", st)
	}
}
