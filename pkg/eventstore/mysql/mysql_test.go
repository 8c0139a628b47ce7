package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/eventstoretest"
	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

func TestMain(m *testing.M) { os.Exit(mysqltest.Main(m)) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a migrated store on url.
func openStore(t testing.TB, url string, cfg mysql.Config) *mysql.Store {
	t.Helper()
	s, err := mysql.Open(testCtx(t), url, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(testCtx(t)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func newStore(t testing.TB, cfg mysql.Config) *mysql.Store {
	t.Helper()
	return openStore(t, mysqltest.NewDatabase(t), cfg)
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name   string
		schema eventstore.Schema
	}{
		{"DefaultSchema", eventstore.DefaultSchema()},
		{"StoredEventsSchema", eventstore.StoredEventsSchema()},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder {
				return newStore(t, mysql.Config{Schema: c.schema})
			})
		})
	}
}

func rec(id uuid.UUID, pos uint64, topic string) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: topic, Data: []byte(fmt.Sprintf(`{"p":%d}`, pos))}
}

func TestParseDSN(t *testing.T) {
	cases := []struct {
		in               string
		net, addr, db    string
		user, pass       string
		wantErr          bool
		wantParamTimeout time.Duration
	}{
		{in: "mysql://u:p@h:3307/db", net: "tcp", addr: "h:3307", db: "db", user: "u", pass: "p"},
		{in: "mysql://u@h/db", net: "tcp", addr: "h:3306", db: "db", user: "u"},
		{in: "mysql://u:p%40ss@127.0.0.1:1/x?timeout=5s", net: "tcp", addr: "127.0.0.1:1", db: "x", user: "u", pass: "p@ss", wantParamTimeout: 5 * time.Second},
		{in: "mysql://root@/db?socket=/run/mysqld/mysqld.sock", net: "unix", addr: "/run/mysqld/mysqld.sock", db: "db", user: "root"},
		{in: "mariadb://u@[::1]:3306/db", net: "tcp", addr: "[::1]:3306", db: "db", user: "u"},
		{in: "u:p@tcp(h:3306)/db", net: "tcp", addr: "h:3306", db: "db", user: "u", pass: "p"},
		{in: "mysql://u@h/db?interpolateParams=true&multiStatements=true", net: "tcp", addr: "h:3306", db: "db", user: "u"},
		{in: "", wantErr: true},
		{in: "postgres://u@h/db", wantErr: true},
		{in: "mysql://u@h/db?timeout=banana", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			cfg, err := mysql.ParseDSN(c.in)
			if c.wantErr {
				if err == nil {
					t.Fatalf("ParseDSN(%q) succeeded", c.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Net != c.net || cfg.Addr != c.addr || cfg.DBName != c.db || cfg.User != c.user || cfg.Passwd != c.pass {
				t.Fatalf("got %s %s db=%s user=%s pass=%s", cfg.Net, cfg.Addr, cfg.DBName, cfg.User, cfg.Passwd)
			}
			if !cfg.ParseTime || cfg.InterpolateParams || cfg.MultiStatements || cfg.Loc != time.UTC {
				t.Fatalf("forced options not applied: %+v", cfg)
			}
			if c.wantParamTimeout != 0 && cfg.Timeout != c.wantParamTimeout {
				t.Fatalf("timeout = %v", cfg.Timeout)
			}
		})
	}
}

func TestInvalidIdentifiersRejected(t *testing.T) {
	bad := []eventstore.Schema{
		{Table: "events; drop table x"},
		{Table: "Events"},
		{Table: "ev`ents"},
		{StreamIDColumn: "id--"},
		{SnapshotTable: "snap shots"},
		{TopicColumn: "notification_id"},
		{DataColumn: "topic"},
	}
	for _, sc := range bad {
		// Validation comes before connecting, so Open needs no server.
		s, err := mysql.Open(context.Background(), "mysql://nobody@127.0.0.1:1/none", mysql.Config{Schema: sc})
		if !errors.Is(err, eventstore.ErrInvalidIdentifier) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("schema %+v: err = %v, want ErrInvalidIdentifier", sc, err)
		}
	}
	if _, err := mysql.New(nil, mysql.Config{}); err == nil {
		t.Errorf("New(nil) succeeded")
	}
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	url := mysqltest.NewDatabase(t)
	s := openStore(t, url, mysql.Config{}) // migrated once
	ctx := testCtx(t)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	other, err := mysql.Open(ctx, url, mysql.Config{Schema: eventstore.StoredEventsSchema()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		st := s
		if i%2 == 1 {
			st = other
		}
		wg.Go(func() { errs <- st.Migrate(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, "SELECT count(*) FROM "+mysql.MigrationsTable).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 { // two versions for each of the two tables
		t.Errorf("%s has %d rows, want 4", mysql.MigrationsTable, n)
	}
	id := uuid.New()
	if err := other.Append(ctx, []eventstore.Record{rec(id, 0, "T")}); err != nil {
		t.Fatalf("append to stored_events: %v", err)
	}
	var cols int
	if err := s.DB().QueryRowContext(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_schema = DATABASE()
		AND table_name = 'stored_events' AND column_name IN ('aggregate_id', 'aggregate_version', 'event_type', 'state', 'notification_id')`).Scan(&cols); err != nil || cols != 5 {
		t.Errorf("stored_events columns = %d, %v; want 5", cols, err)
	}
	// Each table numbers its own log.
	if err := s.Append(ctx, []eventstore.Record{rec(uuid.New(), 0, "T"), rec(uuid.New(), 0, "T")}); err != nil {
		t.Fatal(err)
	}
	if m, err := other.MaxNotificationID(ctx); err != nil || m != 1 {
		t.Errorf("stored_events max id = %d, %v; want 1", m, err)
	}
	if m, err := s.MaxNotificationID(ctx); err != nil || m != 2 {
		t.Errorf("events max id = %d, %v; want 2", m, err)
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	s := newStore(t, mysql.Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close() // twice is fine
	if err := s.Append(testCtx(t), []eventstore.Record{rec(uuid.New(), 0, "T")}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := s.MaxNotificationID(testCtx(t)); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("MaxNotificationID after Close: %v", err)
	}
}

func TestOversizedTopicIsInvalid(t *testing.T) {
	t.Parallel()
	s := newStore(t, mysql.Config{})
	long := make([]byte, 2000)
	for i := range long {
		long[i] = 'x'
	}
	err := s.Append(testCtx(t), []eventstore.Record{rec(uuid.New(), 0, string(long))})
	if !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("err = %v, want ErrInvalidRecord", err)
	}
	if m, err := s.MaxNotificationID(testCtx(t)); err != nil || m != 0 {
		t.Fatalf("max id after refused append = %d, %v", m, err)
	}
}

// TestRacingWritersAtomicBatches: 8 writers race for the same version,
// each in a batch that also starts a stream of its own. Exactly one wins;
// the losers write nothing of their batch, and the error names the
// contested stream.
func TestRacingWritersAtomicBatches(t *testing.T) {
	t.Parallel()
	s := newStore(t, mysql.Config{})
	ctx := testCtx(t)
	shared := uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(shared, 0, "Created")}); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	own := make([]uuid.UUID, writers)
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		own[w] = uuid.New()
		wg.Go(func() {
			<-start
			errs[w] = s.Append(ctx, []eventstore.Record{rec(own[w], 0, "Own"), rec(own[w], 1, "Own"), rec(shared, 1, "W"), rec(shared, 2, "W")})
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for w, err := range errs {
		got, rerr := s.ReadStream(ctx, own[w], eventstore.StreamQuery{})
		if rerr != nil {
			t.Fatal(rerr)
		}
		switch {
		case err == nil:
			wins++
			if len(got) != 2 {
				t.Errorf("winner %d has %d records in its own stream", w, len(got))
			}
		case errors.Is(err, eventstore.ErrConcurrency):
			var se *eventstore.Error
			if !errors.As(err, &se) || se.StreamID != shared || se.Position != 1 {
				t.Errorf("loser %d: error %v does not name stream %s at 1", w, err, shared)
			}
			if len(got) != 0 {
				t.Errorf("loser %d wrote %d records of its own stream", w, len(got))
			}
		default:
			t.Errorf("writer %d: unexpected error %v", w, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d winners, want 1", wins)
	}
	if m, err := s.MaxNotificationID(ctx); err != nil || m != 5 {
		t.Fatalf("MaxNotificationID = %d, %v; want 5 (no ids burnt by the losers)", m, err)
	}
}

// BenchmarkAppend measures one-event appends (a new stream each time) at
// the given concurrency. Run with -run '^$' -bench Append.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []int{1, 8} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			s := newStore(b, mysql.Config{})
			ctx := context.Background()
			data := []byte(`{"what":"something happened","n":12345}`)
			b.SetParallelism(c) // c goroutines per GOMAXPROCS
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Append(ctx, []eventstore.Record{{StreamID: uuid.New(), Topic: "Happened", Data: data}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkRawInsert is the yardstick for BenchmarkAppend: the same row
// written by BEGIN, one prepared INSERT into an AUTO_INCREMENT table with
// no notification counter, and COMMIT, on the same server.
func BenchmarkRawInsert(b *testing.B) {
	for _, c := range []int{1, 8} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			db, err := mysql.OpenDB(mysqltest.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			if _, err := db.ExecContext(ctx, `CREATE TABLE raw (id BIGINT AUTO_INCREMENT PRIMARY KEY,
				sid BINARY(16) NOT NULL, pos BIGINT NOT NULL, topic VARCHAR(1024) NOT NULL, data LONGBLOB NOT NULL,
				UNIQUE KEY (sid, pos)) ENGINE=InnoDB`); err != nil {
				b.Fatal(err)
			}
			ins, err := db.PrepareContext(ctx, `INSERT INTO raw (sid, pos, topic, data) VALUES (?, ?, ?, ?)`)
			if err != nil {
				b.Fatal(err)
			}
			defer ins.Close()
			data := []byte(`{"what":"something happened","n":12345}`)
			b.SetParallelism(c)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := uuid.New()
					tx, err := db.BeginTx(ctx, nil)
					if err == nil {
						_, err = tx.StmtContext(ctx, ins).ExecContext(ctx, id[:], 0, "Happened", data)
						if err == nil {
							err = tx.Commit()
						} else {
							_ = tx.Rollback()
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// TestSessionsReadCommitted: pools from OpenDB run at READ COMMITTED, so
// the notification log's locking reads take no gap locks.
func TestSessionsReadCommitted(t *testing.T) {
	t.Parallel()
	s := newStore(t, mysql.Config{})
	var level string
	err := s.DB().QueryRowContext(testCtx(t), `SELECT @@SESSION.tx_isolation`).Scan(&level)
	if err != nil { // MySQL 8 knows only the newer name
		err = s.DB().QueryRowContext(testCtx(t), `SELECT @@SESSION.transaction_isolation`).Scan(&level)
	}
	if err != nil || level != "READ-COMMITTED" {
		t.Fatalf("session isolation = %q, %v", level, err)
	}
}
