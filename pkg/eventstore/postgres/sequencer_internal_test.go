package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openFor(t *testing.T, dsn string, cfg Config) *Store {
	t.Helper()
	s, err := Open(ctxFor(t), dsn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func record(id uuid.UUID, pos uint64) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: "T", Data: []byte(`{}`)}
}

// TestUpgradeKeepsNotificationIDs builds a table as the release before
// migration 3 left it (ids in the notification_id column, some rows not
// numbered yet) and checks that the upgrade keeps every id, numbers the
// rest after them, and that the log continues from there.
func TestUpgradeKeepsNotificationIDs(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	dsn := pgtest.NewDatabase(t)
	old := openFor(t, dsn, Config{NoSequencer: true})
	if err := old.migrate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	a := uuid.New()
	for pos := range uint64(5) {
		if err := old.Append(ctx, []eventstore.Record{record(a, pos)}); err != nil {
			t.Fatal(err)
		}
	}
	// The former sequencer numbered three of them. Ids that do not
	// follow seq show that they are carried over, not recomputed.
	if _, err := old.Pool().Exec(ctx, `UPDATE events SET notification_id = 4 - seq WHERE seq <= 3`); err != nil {
		t.Fatal(err)
	}
	s := openFor(t, dsn, Config{})
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, []eventstore.Record{record(a, 5), record(a, 6)}); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	wantPos := []uint64{2, 1, 0, 3, 4, 5, 6}
	if len(ns) != len(wantPos) {
		t.Fatalf("got %d notifications, want %d", len(ns), len(wantPos))
	}
	for i, n := range ns {
		if n.ID != uint64(i+1) || n.Position != wantPos[i] {
			t.Errorf("notification %d = id %d position %d; want id %d position %d", i, n.ID, n.Position, i+1, wantPos[i])
		}
	}
	var cols int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'notification_id'`).Scan(&cols); err != nil || cols != 0 {
		t.Errorf("events.notification_id still there (%d, %v)", cols, err)
	}
}

// TestTwoSequencersFenced runs the store's own sequencer and two rogue
// step loops that ignore the sequencer lock, all at once, while writers
// append. The keys of the notifications table must make every double
// assignment fail: at the end every event has exactly one id, the ids
// are 1..N, and each transaction's ids are one contiguous run.
func TestTwoSequencersFenced(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	dsn := pgtest.NewDatabase(t)
	s := openFor(t, dsn, Config{SequencerPoll: time.Millisecond})
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var rogue sync.WaitGroup
	var steps, collisions atomic.Int64
	for range 2 {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		rogue.Add(1)
		go func() {
			defer rogue.Done()
			defer conn.Close(context.Background())
			for {
				select {
				case <-stop:
					return
				default:
				}
				base, err := readBaseline(ctx, conn, s.baselineSQL)
				if err != nil {
					t.Errorf("rogue baseline: %v", err)
					return
				}
				var n, txs, backlog int64
				var next string
				err = conn.QueryRow(ctx, s.stepSQL, int64(7), base.text, base.xmax, base.xip).Scan(&n, &txs, &backlog, &next)
				var pgErr *pgconn.PgError
				switch {
				case err == nil:
					steps.Add(1)
				case errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "40001"):
					collisions.Add(1) // the fence at work: nothing written
				default:
					t.Errorf("rogue step: %v", err)
					return
				}
			}
		}()
	}
	var writers sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for w := range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			ids := []uuid.UUID{uuid.New(), uuid.New()}
			next := map[uuid.UUID]uint64{}
			for i := 0; time.Now().Before(deadline); i++ {
				var batch []eventstore.Record
				for k := range 1 + (i+w)%5 { // batches of 1..5 over two streams
					id := ids[k%2]
					batch = append(batch, record(id, next[id]))
					next[id]++
				}
				if err := s.Append(ctx, batch); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	rogue.Wait()
	if err := s.Sequence(ctx); err != nil {
		t.Fatal(err)
	}
	var events, numbered, maxID, brokenTx, unnumbered int64
	err := s.Pool().QueryRow(ctx, `SELECT
    (SELECT count(*) FROM events),
    (SELECT count(*) FROM events_notifications),
    (SELECT coalesce(max(notification_id), 0) FROM events_notifications),
    (SELECT count(*) FROM (
        SELECT e.tx_id FROM events e JOIN events_notifications n USING (seq)
        GROUP BY e.tx_id HAVING max(n.notification_id) - min(n.notification_id) + 1 <> count(*)) b),
    (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM events_notifications n WHERE n.seq = e.seq))`).
		Scan(&events, &numbered, &maxID, &brokenTx, &unnumbered)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events; rogue steps: %d committed, %d refused by the fence", events, steps.Load(), collisions.Load())
	if events == 0 || numbered != events || maxID != events || unnumbered != 0 {
		t.Fatalf("events %d, numbered %d, max id %d, unnumbered %d: want every event numbered once with ids 1..N", events, numbered, maxID, unnumbered)
	}
	if brokenTx != 0 {
		t.Fatalf("%d transactions' ids are not one contiguous run", brokenTx)
	}
}

// TestStepTakesWholeTransactionsInOrder runs the step statement by hand
// over three committed transactions of 2, 3 and 4 records with a batch of
// 4: the first step takes the first two transactions (the second one
// starts below the batch, so it is taken whole: 5 records) and leaves
// the third, keeping the baseline; the second step takes the third and
// moves the baseline. Ids follow the transactions' order and, within
// one, insertion order.
func TestStepTakesWholeTransactionsInOrder(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t)
	dsn := pgtest.NewDatabase(t)
	s := openFor(t, dsn, Config{NoSequencer: true})
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var want []uuid.UUID // streams in the order their records were inserted
	for _, size := range []int{2, 3, 4} {
		var batch []eventstore.Record
		for range size {
			id := uuid.New()
			batch = append(batch, record(id, 0))
			want = append(want, id)
		}
		if err := s.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	step := func() (n, txs, backlog int64, moved bool) {
		t.Helper()
		base, err := readBaseline(ctx, conn, s.baselineSQL)
		if err != nil {
			t.Fatal(err)
		}
		var next string
		if err := conn.QueryRow(ctx, s.stepSQL, int64(4), base.text, base.xmax, base.xip).Scan(&n, &txs, &backlog, &next); err != nil {
			t.Fatal(err)
		}
		return n, txs, backlog, next != base.text
	}
	if n, txs, backlog, moved := step(); n != 5 || txs != 2 || backlog != 1 || moved {
		t.Fatalf("first step: %d records of %d transactions, %d left, baseline moved %v; want 5, 2, 1, false", n, txs, backlog, moved)
	}
	if n, txs, backlog, moved := step(); n != 4 || txs != 1 || backlog != 0 || !moved {
		t.Fatalf("second step: %d records of %d transactions, %d left, baseline moved %v; want 4, 1, 0, true", n, txs, backlog, moved)
	}
	if n, txs, backlog, _ := step(); n != 0 || txs != 0 || backlog != 0 {
		t.Fatalf("third step: %d records of %d transactions, %d left; want nothing", n, txs, backlog)
	}
	rows, err := conn.Query(ctx, `SELECT e.sequence_id FROM events_notifications x JOIN events e ON e.seq = x.seq ORDER BY x.notification_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d numbered, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("id %d is stream %s, want %s (insertion order)", i+1, got[i], want[i])
		}
	}
}
