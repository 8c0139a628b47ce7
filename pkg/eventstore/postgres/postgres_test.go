package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/eventstoretest"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a migrated store on dsn.
func openStore(t *testing.T, dsn string, cfg postgres.Config) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(testCtx(t), dsn, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(testCtx(t)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func newStore(t *testing.T, cfg postgres.Config) *postgres.Store {
	t.Helper()
	return openStore(t, pgtest.NewDatabase(t), cfg)
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name   string
		schema eventstore.Schema
	}{
		{"DefaultSchema", eventstore.DefaultSchema()},
		{"StoredEventsSchema", eventstore.StoredEventsSchema()},
		{"ZeroSchema", eventstore.Schema{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder {
				return newStore(t, postgres.Config{Schema: c.schema})
			})
		})
	}
}

func rec(id uuid.UUID, pos uint64, topic string) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: topic, Data: []byte(fmt.Sprintf(`{"p":%d}`, pos))}
}

func TestInvalidIdentifiersRejected(t *testing.T) {
	t.Parallel()
	bad := []eventstore.Schema{
		{Table: "events; drop table x"},
		{Table: `Events`},
		{Table: `ev"ents`},
		{StreamIDColumn: "id--"},
		{SnapshotTable: "snap shots"},
		{TopicColumn: "notification_id"},
		{DataColumn: "topic"},
	}
	for _, sc := range bad {
		// New validates before touching the pool, so Open needs no server.
		s, err := postgres.Open(context.Background(), "postgres://nobody@127.0.0.1:1/none", postgres.Config{Schema: sc})
		if !errors.Is(err, eventstore.ErrInvalidIdentifier) {
			if s != nil {
				s.Close()
			}
			t.Errorf("schema %+v: err = %v, want ErrInvalidIdentifier", sc, err)
		}
	}
	if _, err := postgres.New(nil, postgres.Config{}); err == nil {
		t.Errorf("New(nil pool) succeeded")
	}
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	s := openStore(t, dsn, postgres.Config{}) // migrated once
	ctx := testCtx(t)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	// Concurrent migrations of two schemas in the same database.
	other, err := postgres.Open(ctx, dsn, postgres.Config{Schema: eventstore.StoredEventsSchema()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			errs <- st.Migrate(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
	var n int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM `+postgres.MigrationsTable).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 6 { // three versions for each of the two tables
		t.Errorf("%s has %d rows, want 6", postgres.MigrationsTable, n)
	}
	id := uuid.New()
	if err := other.Append(ctx, []eventstore.Record{rec(id, 0, "T")}); err != nil {
		t.Fatalf("append to stored_events: %v", err)
	}
	var cols int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'stored_events'
		AND column_name IN ('aggregate_id', 'aggregate_version', 'event_type', 'state', 'tx_id', 'seq')`).Scan(&cols); err != nil || cols != 6 {
		t.Errorf("stored_events columns = %d, %v; want 6", cols, err)
	}
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	s.Close()
	s.Close() // twice is fine
	if err := s.Append(testCtx(t), []eventstore.Record{rec(uuid.New(), 0, "T")}); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := s.MaxNotificationID(testCtx(t)); !errors.Is(err, eventstore.ErrClosed) {
		t.Errorf("MaxNotificationID after Close: %v", err)
	}
}

// TestRacingWritersAtomicBatches: 8 writers race for the same version,
// each in a batch that also starts a stream of its own. Exactly one wins;
// the losers write nothing of their batch.
func TestRacingWritersAtomicBatches(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			batch := []eventstore.Record{rec(own[w], 0, "Own"), rec(own[w], 1, "Own"), rec(shared, 1, fmt.Sprintf("W%d", w)), rec(shared, 2, "W")}
			errs[w] = s.Append(ctx, batch)
		}()
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
	max, err := s.MaxNotificationID(ctx)
	if err != nil || max != 5 {
		t.Fatalf("MaxNotificationID = %d, %v; want 5", max, err)
	}
}

// TestBeyondEndInMultiStreamBatch: the second stream of a batch starts
// beyond its end; nothing of the first stream is written and the error
// names the second.
func TestBeyondEndInMultiStreamBatch(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	ctx := testCtx(t)
	a, b := uuid.New(), uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(b, 0, "T")}); err != nil {
		t.Fatal(err)
	}
	err := s.Append(ctx, []eventstore.Record{rec(a, 0, "T"), rec(a, 1, "T"), rec(b, 3, "T"), rec(b, 4, "T")})
	var se *eventstore.Error
	if !errors.Is(err, eventstore.ErrConcurrency) || !errors.As(err, &se) || se.StreamID != b || se.Position != 3 {
		t.Fatalf("err = %v, want ErrConcurrency naming %s at 3", err, b)
	}
	if got, _ := s.ReadStream(ctx, a, eventstore.StreamQuery{}); len(got) != 0 {
		t.Fatalf("stream a has %d records", len(got))
	}
	// Existing position in the second stream of a batch.
	err = s.Append(ctx, []eventstore.Record{rec(a, 0, "T"), rec(b, 0, "T")})
	if !errors.Is(err, eventstore.ErrConcurrency) || !errors.As(err, &se) || se.StreamID != b || se.Position != 0 {
		t.Fatalf("err = %v, want ErrConcurrency naming %s at 0", err, b)
	}
	if got, _ := s.ReadStream(ctx, a, eventstore.StreamQuery{}); len(got) != 0 {
		t.Fatalf("stream a has %d records", len(got))
	}
}

// TestAppendTxSharesTransaction: records appended with AppendTx commit
// and roll back with the caller's transaction; rolled-back appends leave
// no gap in notification ids.
func TestAppendTxSharesTransaction(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	ctx := testCtx(t)
	if _, err := s.Pool().Exec(ctx, `CREATE TABLE outbox (id uuid PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	a, b := uuid.New(), uuid.New()
	// Rolled back: three records and an outbox row vanish.
	for range 3 {
		err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
			if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(b, 0, "T"), rec(b, 1, "T"), rec(b, 2, "T")}); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO outbox VALUES ($1)`, b); err != nil {
				return err
			}
			return errors.New("abort")
		})
		if err == nil || err.Error() != "abort" {
			t.Fatalf("BeginFunc: %v", err)
		}
	}
	// Committed.
	err := pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
		if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(a, 0, "T"), rec(a, 1, "T")}); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO outbox VALUES ($1)`, a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// A conflict inside a caller's transaction.
	err = pgx.BeginFunc(ctx, s.Pool(), func(tx pgx.Tx) error {
		return s.AppendTx(ctx, tx, []eventstore.Record{rec(b, 0, "T"), rec(a, 5, "T")})
	})
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("AppendTx beyond end: %v", err)
	}
	if err := s.Append(ctx, []eventstore.Record{rec(b, 0, "T")}); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 3 {
		t.Fatalf("got %d notifications, want 3", len(ns))
	}
	for i, n := range ns {
		if n.ID != uint64(i+1) {
			t.Fatalf("notification %d has id %d: gap after rollbacks", i, n.ID)
		}
	}
	var outbox int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&outbox); err != nil || outbox != 1 {
		t.Fatalf("outbox rows = %d, %v; want 1", outbox, err)
	}
}

// TestLateCommitIsNumberedLater: records of a transaction still open
// are not numbered; records committed meanwhile are, without waiting for
// it; when it commits its records follow them. A long-running writer
// delays nobody.
func TestLateCommitIsNumberedLater(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	ctx := testCtx(t)
	old, young := uuid.New(), uuid.New()
	if err := s.Append(ctx, []eventstore.Record{rec(uuid.New(), 0, "Before")}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := s.AppendTx(ctx, tx, []eventstore.Record{rec(old, 0, "Old")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, []eventstore.Record{rec(young, 0, "Young"), rec(young, 1, "Young")}); err != nil {
		t.Fatal(err)
	}
	topics := func(start uint64) []string {
		t.Helper()
		ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: start, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, n := range ns {
			if n.ID != start+uint64(i) {
				t.Fatalf("ids from %d: got %d at %d", start, n.ID, i)
			}
			out = append(out, n.Topic)
		}
		return out
	}
	if got := fmt.Sprint(topics(1)); got != "[Before Young Young]" {
		t.Fatalf("while the older transaction is open: %s", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(topics(1)); got != "[Before Young Young Old]" {
		t.Fatalf("after commit: %s", got)
	}
}

// TestSmallSequencerBatchesNeverSkip is the concurrent tail with a tiny
// sequencer batch, so numbering takes many steps while writers run.
func TestSmallSequencerBatchesNeverSkip(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{SequencerBatch: 3})
	ctx := testCtx(t)
	const writers, perWriter, readers = 8, 40, 3
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uuid.New()
			for i := range perWriter {
				batch := []eventstore.Record{rec(id, uint64(2*i), "T"), rec(id, uint64(2*i+1), "T")}
				if err := s.Append(ctx, batch); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	var rg sync.WaitGroup
	for r := range readers {
		rg.Add(1)
		go func() {
			defer rg.Done()
			next := uint64(1)
			last := map[uuid.UUID]int64{}
			seen := 0
			finished := false
			for {
				ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: next, Limit: 5})
				if err != nil {
					t.Errorf("reader %d: %v", r, err)
					return
				}
				for _, n := range ns {
					if n.ID != next {
						t.Errorf("reader %d: got id %d, want %d", r, n.ID, next)
						return
					}
					prev, ok := last[n.StreamID]
					if !ok {
						prev = -1
					}
					if int64(n.Position) != prev+1 {
						t.Errorf("reader %d: stream %s position %d after %d", r, n.StreamID, n.Position, prev)
						return
					}
					last[n.StreamID] = int64(n.Position)
					next++
					seen++
				}
				if len(ns) == 0 {
					if finished {
						if seen != writers*perWriter*2 {
							t.Errorf("reader %d saw %d records, want %d", r, seen, writers*perWriter*2)
						}
						return
					}
					select {
					case <-done:
						finished = true
					case <-time.After(time.Millisecond):
					}
				}
			}
		}()
	}
	rg.Wait()
}

func TestReadStreamAndSnapshotEdgeCases(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	ctx := testCtx(t)
	id := uuid.New()
	if err := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: 0, Topic: "Empty"}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadStream(ctx, id, eventstore.StreamQuery{})
	if err != nil || len(got) != 1 || len(got[0].Data) != 0 {
		t.Fatalf("ReadStream = %v, %v", got, err)
	}
	huge := ^uint64(0)
	if got, err := s.ReadStream(ctx, id, eventstore.StreamQuery{After: &huge}); err != nil || len(got) != 0 {
		t.Fatalf("After max = %v, %v", got, err)
	}
	if got, err := s.ReadStream(ctx, id, eventstore.StreamQuery{UpTo: &huge}); err != nil || len(got) != 1 {
		t.Fatalf("UpTo max = %v, %v", got, err)
	}
	if err := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: huge, Topic: "T"}}); !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("position beyond bigint: %v", err)
	}
	if err := s.SaveSnapshot(ctx, eventstore.Record{StreamID: id, Topic: ""}); !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("snapshot without topic: %v", err)
	}
	if _, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1}); err == nil {
		t.Fatal("Limit 0 accepted")
	}
}
