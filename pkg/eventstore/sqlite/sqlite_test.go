package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/eventstoretest"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open opens and migrates a store, closed at the end of the test.
func open(t *testing.T, dsn string, schema eventstore.Schema) *sqlite.Store {
	t.Helper()
	ctx := testCtx(t)
	s, err := sqlite.Open(ctx, dsn, sqlite.Config{Schema: schema})
	if err != nil {
		t.Fatalf("Open(%q): %v", dsn, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func fileDSN(t *testing.T) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "events.db")
}

func TestConformance(t *testing.T) {
	schemas := map[string]eventstore.Schema{
		"DefaultSchema":      eventstore.DefaultSchema(),
		"StoredEventsSchema": eventstore.StoredEventsSchema(),
	}
	for name, schema := range schemas {
		t.Run("Memory/"+name, func(t *testing.T) {
			eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder {
				return open(t, "sqlite::memory:", schema)
			})
		})
		t.Run("File/"+name, func(t *testing.T) {
			eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder {
				return open(t, fileDSN(t), schema)
			})
		})
	}
}

func rec(id uuid.UUID, pos uint64, topic string) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: topic, Data: []byte(fmt.Sprintf(`{"p":%d}`, pos))}
}

func TestParseDSN(t *testing.T) {
	cases := []struct {
		dsn     string
		path    string
		mem     bool
		wantErr bool
	}{
		{dsn: "sqlite:///abs/path.db", path: "/abs/path.db"},
		{dsn: "sqlite:///:memory:", mem: true},
		{dsn: "sqlite::memory:", mem: true},
		{dsn: "sqlite://:memory:", mem: true},
		{dsn: ":memory:", mem: true},
		{dsn: "sqlite://relative/path.db", path: "relative/path.db"},
		{dsn: "sqlite:relative.db", path: "relative.db"},
		{dsn: "SQLite:///abs/x.db", path: "/abs/x.db"},
		{dsn: "sqlite:///tmp/my%20events.db", path: "/tmp/my events.db"},
		{dsn: "/plain/abs.db", path: "/plain/abs.db"},
		{dsn: "plain/rel.db", path: "plain/rel.db"},
		{dsn: "./events.db", path: "./events.db"},
		{dsn: "", wantErr: true},
		{dsn: "sqlite://", wantErr: true},
		{dsn: "sqlite:///", wantErr: true},
		{dsn: "sqlite:///x.db?mode=ro", wantErr: true},
		{dsn: "sqlite:///x.db#frag", wantErr: true},
		{dsn: "sqlite:///x%3Fy.db", wantErr: true},
		{dsn: "sqlite:///bad%zz.db", wantErr: true},
		{dsn: "postgres://user@host/db", wantErr: true},
		{dsn: "file.db?_pragma=x", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.dsn, func(t *testing.T) {
			path, mem, err := sqlite.ParseDSN(c.dsn)
			if c.wantErr {
				if err == nil {
					t.Fatalf("ParseDSN(%q) = %q, %v, nil; want an error", c.dsn, path, mem)
				}
				return
			}
			if err != nil || path != c.path || mem != c.mem {
				t.Fatalf("ParseDSN(%q) = %q, %v, %v; want %q, %v, nil", c.dsn, path, mem, err, c.path, c.mem)
			}
		})
	}
}

func TestInvalidIdentifiersRejected(t *testing.T) {
	bad := []eventstore.Schema{
		{Table: "events; DROP TABLE x"},
		{Table: `ev"ents`},
		{Table: "Events"},
		{StreamIDColumn: "1id"},
		{TopicColumn: "notification_id"},
		{TopicColumn: "data"}, // duplicates the data column
		{SnapshotTable: "events"},
	}
	for _, schema := range bad {
		t.Run(fmt.Sprintf("%+v", schema), func(t *testing.T) {
			s, err := sqlite.Open(testCtx(t), "sqlite::memory:", sqlite.Config{Schema: schema})
			if !errors.Is(err, eventstore.ErrInvalidIdentifier) {
				if s != nil {
					_ = s.Close()
				}
				t.Fatalf("Open err = %v, want ErrInvalidIdentifier", err)
			}
			if _, err := sqlite.New(&sql.DB{}, sqlite.Config{Schema: schema}); !errors.Is(err, eventstore.ErrInvalidIdentifier) {
				t.Fatalf("New err = %v, want ErrInvalidIdentifier", err)
			}
		})
	}
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := testCtx(t)
	dsn := fileDSN(t)
	s := open(t, dsn, eventstore.Schema{})
	for range 3 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}
	// A second schema in the same file is tracked separately.
	other := open(t, dsn, eventstore.StoredEventsSchema())
	if err := other.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := s.DB().QueryContext(ctx, `SELECT table_name, version FROM esflow_schema_migrations ORDER BY table_name, version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		var v int
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s/%d", name, v))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := "events/1 events/2 stored_events/1 stored_events/2"
	if strings.Join(got, " ") != want {
		t.Fatalf("migrations = %v, want %s", got, want)
	}
	// Both stores work side by side.
	id := uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(id, 0, "A")}); err != nil {
		t.Fatal(err)
	}
	if err := other.Append(ctx, []eventstore.Record{rec(id, 0, "B")}); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentMigrate(t *testing.T) {
	dsn := fileDSN(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := sqlite.Open(testCtx(t), dsn, sqlite.Config{})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			errs <- s.Migrate(testCtx(t))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "keep.db")
	id := uuid.New()

	s, err := sqlite.Open(ctx, "sqlite://"+path, sqlite.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, []eventstore.Record{rec(id, 0, "Created"), rec(id, 1, "Renamed")}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSnapshot(ctx, rec(id, 1, "Snap")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, []eventstore.Record{rec(id, 2, "Late")}); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}

	// Reopen with the plain-path form.
	s2 := open(t, path, eventstore.Schema{})
	got, err := s2.ReadStream(ctx, id, eventstore.StreamQuery{})
	if err != nil || len(got) != 2 || got[1].Topic != "Renamed" {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
	if max, err := s2.MaxNotificationID(ctx); err != nil || max != 2 {
		t.Fatalf("MaxNotificationID = %d, %v; want 2", max, err)
	}
	if snap, ok, err := s2.LatestSnapshot(ctx, id, nil); err != nil || !ok || snap.Topic != "Snap" {
		t.Fatalf("LatestSnapshot = %+v, %v, %v", snap, ok, err)
	}
	if err := s2.Append(ctx, []eventstore.Record{rec(id, 2, "More")}); err != nil {
		t.Fatal(err)
	}
	if max, _ := s2.MaxNotificationID(ctx); max != 3 {
		t.Fatalf("MaxNotificationID = %d, want 3", max)
	}
}

func TestJournalModeWAL(t *testing.T) {
	s := open(t, fileDSN(t), eventstore.Schema{})
	var mode string
	if err := s.DB().QueryRowContext(testCtx(t), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if !strings.EqualFold(mode, "wal") {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
}

func TestInMemoryStoresArePrivate(t *testing.T) {
	ctx := testCtx(t)
	a := open(t, "sqlite::memory:", eventstore.Schema{})
	b := open(t, "sqlite:///:memory:", eventstore.Schema{})
	if err := a.Append(ctx, []eventstore.Record{rec(uuid.New(), 0, "A")}); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.MaxNotificationID(ctx); n != 0 {
		t.Fatalf("second in-memory store sees %d records", n)
	}
	if n, _ := a.MaxNotificationID(ctx); n != 1 {
		t.Fatalf("in-memory store lost its record: max id %d", n)
	}
}

// TestConcurrentAppendersSamePosition races writers on separate Stores
// (separate connection pools, as separate processes would have) and on one
// Store. Exactly one writer wins; the others get ErrConcurrency, never
// "database is locked".
func TestConcurrentAppendersSamePosition(t *testing.T) {
	dsn := fileDSN(t)
	first := open(t, dsn, eventstore.Schema{})
	stores := []*sqlite.Store{first}
	for range 3 {
		s, err := sqlite.Open(testCtx(t), dsn, sqlite.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores = append(stores, s)
	}
	for round := range 5 {
		id := uuid.New()
		const writers = 16
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[w] = stores[w%len(stores)].Append(testCtx(t), []eventstore.Record{rec(id, 0, fmt.Sprintf("W%d", w)), rec(id, 1, "Second")})
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrConcurrency):
				if strings.Contains(err.Error(), "locked") {
					t.Errorf("conflict mentions a lock: %v", err)
				}
			default:
				t.Errorf("round %d: unexpected error: %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, wins)
		}
	}
	ns, err := first.ReadNotifications(testCtx(t), eventstore.NotificationQuery{Start: 1, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range ns {
		if n.ID != uint64(i+1) {
			t.Fatalf("notification ids have a gap at %d: %d", i+1, n.ID)
		}
	}
	if len(ns) != 10 {
		t.Fatalf("got %d notifications, want 10", len(ns))
	}
}

func TestSecondStreamConflictWritesNothing(t *testing.T) {
	for _, dsn := range []string{"sqlite::memory:", fileDSN(t)} {
		t.Run(dsn, func(t *testing.T) {
			ctx := testCtx(t)
			s := open(t, dsn, eventstore.Schema{})
			a, b := uuid.New(), uuid.New()
			if err := s.Append(ctx, []eventstore.Record{rec(b, 0, "B0"), rec(b, 1, "B1")}); err != nil {
				t.Fatal(err)
			}
			for _, conflict := range []eventstore.Record{rec(b, 1, "Existing"), rec(b, 5, "BeyondEnd")} {
				err := s.Append(ctx, []eventstore.Record{rec(a, 0, "A0"), rec(a, 1, "A1"), conflict})
				if !errors.Is(err, eventstore.ErrConcurrency) {
					t.Fatalf("err = %v, want ErrConcurrency", err)
				}
				var se *eventstore.Error
				if !errors.As(err, &se) || se.StreamID != b || se.Position != conflict.Position {
					t.Fatalf("err = %#v, want *eventstore.Error for %s at %d", err, b, conflict.Position)
				}
				if got, _ := s.ReadStream(ctx, a, eventstore.StreamQuery{}); len(got) != 0 {
					t.Fatalf("stream a has %d records", len(got))
				}
				if max, _ := s.MaxNotificationID(ctx); max != 2 {
					t.Fatalf("MaxNotificationID = %d, want 2", max)
				}
			}
			// The ids the failed batches would have used are reused: no gaps.
			if err := s.Append(ctx, []eventstore.Record{rec(a, 0, "A0")}); err != nil {
				t.Fatal(err)
			}
			ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 3, Limit: 10})
			if err != nil || len(ns) != 1 || ns[0].ID != 3 || ns[0].StreamID != a {
				t.Fatalf("notifications from 3 = %+v, %v", ns, err)
			}
		})
	}
}

func TestAppendTxWithOtherRows(t *testing.T) {
	ctx := testCtx(t)
	s := open(t, fileDSN(t), eventstore.Schema{})
	if _, err := s.DB().ExecContext(ctx, `CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(id, 0, "Created")}); err != nil {
		t.Fatal(err)
	}

	tx, err := s.BeginTx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (body) VALUES ('first')`); err != nil {
		t.Fatal(err)
	}
	// A conflicting append undoes only its own rows.
	if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(id, 1, "Fine"), rec(uuid.New(), 3, "Gap")}); !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("AppendTx err = %v, want ErrConcurrency", err)
	}
	if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(id, 1, "Updated")}); err != nil {
		t.Fatalf("AppendTx after a conflict: %v", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (body) VALUES ('second')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	var outbox int
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&outbox); err != nil || outbox != 2 {
		t.Fatalf("outbox rows = %d, %v; want 2", outbox, err)
	}
	ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: 10})
	if err != nil || len(ns) != 2 || ns[1].ID != 2 || ns[1].Topic != "Updated" {
		t.Fatalf("notifications = %+v, %v", ns, err)
	}

	// Rolling back the caller's transaction discards the appended rows.
	tx, err = s.BeginTx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(id, 2, "Discarded")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if max, _ := s.MaxNotificationID(ctx); max != 2 {
		t.Fatalf("MaxNotificationID = %d, want 2", max)
	}
}

func TestNewWithCallerDB(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "caller.db")
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := sqlite.New(db, sqlite.Config{Schema: eventstore.StoredEventsSchema()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(id, 0, "Created")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The caller's handle stays open and sees the configured table.
	var topic string
	if err := db.QueryRowContext(ctx, `SELECT event_type FROM stored_events WHERE aggregate_id = ?`, id.String()).Scan(&topic); err != nil || topic != "Created" {
		t.Fatalf("stored_events row = %q, %v", topic, err)
	}
	if _, err := sqlite.New(nil, sqlite.Config{}); err == nil {
		t.Fatal("New(nil) accepted")
	}
}

func TestEdgeCases(t *testing.T) {
	ctx := testCtx(t)
	s := open(t, "sqlite::memory:", eventstore.Schema{})
	id := uuid.New()

	big := uint64(math.MaxInt64) + 1
	if err := s.Append(ctx, []eventstore.Record{rec(id, big, "Huge")}); !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("huge position: %v, want ErrInvalidRecord", err)
	}
	if err := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: 0, Topic: "NilData"}}); err != nil {
		t.Fatalf("nil data: %v", err)
	}
	got, err := s.ReadStream(ctx, id, eventstore.StreamQuery{UpTo: &big})
	if err != nil || len(got) != 1 || len(got[0].Data) != 0 {
		t.Fatalf("ReadStream = %+v, %v", got, err)
	}
	if got, err := s.ReadStream(ctx, id, eventstore.StreamQuery{After: &big}); err != nil || len(got) != 0 {
		t.Fatalf("ReadStream after huge = %+v, %v", got, err)
	}
	if _, err := s.ReadStream(ctx, id, eventstore.StreamQuery{Limit: -1}); err == nil {
		t.Fatal("negative limit accepted")
	}
	if _, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: -5}); err == nil {
		t.Fatal("negative notification limit accepted")
	}
	if ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: big, Limit: 5}); err != nil || len(ns) != 0 {
		t.Fatalf("ReadNotifications from huge start = %v, %v", ns, err)
	}
	// Injection attempts in values are just values.
	evil := `x'); DROP TABLE events; --`
	if err := s.Append(ctx, []eventstore.Record{rec(id, 1, evil)}); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 0, Limit: 5, Topics: []string{evil, evil}})
	if err != nil || len(ns) != 1 || ns[0].Topic != evil {
		t.Fatalf("topic filter = %+v, %v", ns, err)
	}
	if err := s.SaveSnapshot(ctx, eventstore.Record{StreamID: uuid.Nil, Topic: "S"}); !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("nil snapshot id: %v", err)
	}
	if err := s.SaveSnapshot(ctx, eventstore.Record{StreamID: id, Topic: ""}); !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("empty snapshot topic: %v", err)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Append(cancelled, []eventstore.Record{rec(id, 2, "T")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with cancelled ctx = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.MaxNotificationID(ctx); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := testCtx(t)
	if _, err := sqlite.Open(ctx, "mysql://x", sqlite.Config{}); err == nil {
		t.Fatal("foreign scheme accepted")
	}
	dir := filepath.Join(t.TempDir(), "missing", "dir", "x.db")
	if s, err := sqlite.Open(ctx, dir, sqlite.Config{}); err == nil {
		_ = s.Close()
		t.Fatal("path in a missing directory accepted")
	}
}

// TestBeginTxTakesWriteLock shows that a write transaction holds the write
// lock from BEGIN (BEGIN IMMEDIATE): a writer with a tiny busy timeout on
// another connection pool cannot start while it is open, and can after.
func TestBeginTxTakesWriteLock(t *testing.T) {
	ctx := testCtx(t)
	dsn := fileDSN(t)
	a := open(t, dsn, eventstore.Schema{})
	b, err := sqlite.Open(ctx, dsn, sqlite.Config{BusyTimeout: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	tx, err := a.BeginTx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	err = b.Append(ctx, []eventstore.Record{rec(id, 0, "Blocked")})
	if err == nil || errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("Append while another transaction holds the write lock = %v, want a busy error", err)
	}
	// Readers are not blocked (WAL).
	if _, err := b.ReadStream(ctx, id, eventstore.StreamQuery{}); err != nil {
		t.Fatalf("ReadStream during a write transaction: %v", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, []eventstore.Record{rec(id, 0, "Free")}); err != nil {
		t.Fatalf("Append after the lock is released: %v", err)
	}
}
