package writer_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

// TestMariaDBTooManyConnections runs the writer on MariaDB (a server of
// its own) as an ordinary user, then limits that user to one connection,
// kills the writer's connections and takes the one allowed: every request
// gets 503 with Retry-After (error 1226, the account's connection limit, translated
// by the MySQL backend),
// never a 500, and the writer serves again once connections are allowed.
func TestMariaDBTooManyConnections(t *testing.T) {
	ctx := context.Background()
	srv := mysqltest.Start(t)
	dbURL := srv.NewDatabase(t)
	admin, err := mysql.OpenDB(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := u.Path[1:]
	user := "w" + uuid.NewString()[:8]
	for _, q := range []string{
		"CREATE USER '" + user + "'@'%' IDENTIFIED BY 'pw'",
		"GRANT ALL ON `" + dbName + "`.* TO '" + user + "'@'%'",
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	u.User = url.UserPassword(user, "pw")
	e := newEnv(t, u.String())
	id := e.createWorld("gods")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "before"})

	limit := func(n string) {
		t.Helper()
		if _, err := admin.ExecContext(ctx, "ALTER USER '"+user+"'@'%' WITH MAX_USER_CONNECTIONS "+n); err != nil {
			t.Fatal(err)
		}
	}
	killAll := func() int {
		t.Helper()
		rows, err := admin.QueryContext(ctx, "SELECT id FROM information_schema.processlist WHERE user = ?", user)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			if _, err := admin.ExecContext(ctx, "KILL CONNECTION ?", id); err != nil {
				t.Logf("kill %d: %v", id, err)
			}
		}
		return len(ids)
	}
	// The account may hold one connection, and the test takes it.
	limit("1")
	if killAll() == 0 {
		t.Fatal("the writer held no connection to kill")
	}
	holderDB, err := mysql.OpenDB(u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer holderDB.Close()
	holder, err := holderDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/v1/worlds/" + id, ""},
		{"POST", "/v1/worlds/" + id + "/make-it-so", `{"what":"during"}`},
		{"POST", "/v1/streams/" + uuid.NewString() + "/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`},
		{"GET", "/v1/streams/" + id + "/events", ""},
		{"GET", "/v1/notifications", ""},
		{"GET", "/v1/activity", ""},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := e.do(c.method, c.path, body)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s %s with too many connections: %d %v %s", c.method, c.path, r.status, r.header, r.raw)
		}
	}

	holder.Close()
	holderDB.Close()
	limit("0")
	ok := false
	for i := 0; i < 20 && !ok; i++ {
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
		t.Fatal("the writer did not recover")
	}
	w := e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil)
	if h := w.body["history"].([]any); len(h) != 2 || h[1] != "after" {
		t.Fatalf("after the outage: %s (nothing of the refused requests may be stored)", w.raw)
	}
}
