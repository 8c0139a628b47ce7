package mysqltest_test

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

func TestMain(m *testing.M) { os.Exit(mysqltest.Main(m)) }

func connect(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := mysql.OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	return db
}

func TestNewDatabaseIsFreshAndUsable(t *testing.T) {
	t.Parallel()
	db := connect(t, mysqltest.NewDatabase(t))
	ctx := context.Background()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("fresh database has %d tables", tables)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id int PRIMARY KEY) ENGINE=InnoDB`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO t VALUES (?), (?)`, 1, 2); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v", n, err)
	}
	var engine string
	if err := db.QueryRowContext(ctx, `SELECT engine FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 't'`).Scan(&engine); err != nil || engine != "InnoDB" {
		t.Fatalf("engine = %q, %v", engine, err)
	}
}

func TestNewDatabaseGivesDistinctDatabases(t *testing.T) {
	t.Parallel()
	a, b := mysqltest.NewDatabase(t), mysqltest.NewDatabase(t)
	if a == b {
		t.Fatalf("two calls returned the same database %s", a)
	}
	ctx := context.Background()
	ca, cb := connect(t, a), connect(t, b)
	if _, err := ca.ExecContext(ctx, `CREATE TABLE only_in_a (x int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := cb.QueryRowContext(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'only_in_a'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("table of database a visible in b: %d, %v", n, err)
	}
}

func TestDatabaseDroppedAfterTest(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		db := connect(t, mysqltest.NewDatabase(t))
		if err := db.QueryRowContext(context.Background(), `SELECT DATABASE()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	if name == "" {
		t.Skip("inner test did not run")
	}
	db := connect(t, mysqltest.NewDatabase(t))
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

// TestStartScopedServer: a server started for one test serves databases
// and is gone when that test ends.
func TestStartScopedServer(t *testing.T) {
	if os.Getenv(mysqltest.ServerURLEnv) != "" {
		t.Skip("an external server is configured; nothing is started")
	}
	var url string
	t.Run("scoped", func(t *testing.T) {
		srv := mysqltest.Start(t)
		url = srv.URL()
		connect(t, srv.NewDatabase(t))
	})
	if url == "" {
		t.Skip("no server")
	}
	db, err := mysql.OpenDB(url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err == nil {
		t.Fatalf("server at %s still answers after its test ended", url)
	}
}
