package postgres_test

import (
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/eventstoretest"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

// batchOf returns n records over streams streams, each starting at 0.
func batchOf(n, streams int) []eventstore.Record {
	ids := make([]uuid.UUID, streams)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var out []eventstore.Record
	for i := range n {
		out = append(out, rec(ids[i%streams], uint64(i/streams), "T"))
	}
	return out
}

// TestConcurrentBatchesAreContiguous: two transactions of 100 and 1000
// events for different aggregates, committed at the same moment, 20
// rounds on one database. All ids of one batch must lie above or below
// all ids of the other: a transaction is one contiguous run of the log.
func TestConcurrentBatchesAreContiguous(t *testing.T) {
	t.Parallel()
	eventstoretest.ConcurrentBatchesContiguous(t, newStore(t, postgres.Config{}), 20, 100, 1000)
}

// TestEventRowsNeverRewritten: sequencing writes only the notifications
// table. Every events row is still the version its writer inserted: its
// xmin is its own transaction's id.
func TestEventRowsNeverRewritten(t *testing.T) {
	t.Parallel()
	s := newStore(t, postgres.Config{})
	ctx := testCtx(t)
	for i := range 50 {
		b := batchOf(1+i%7, 3)
		if err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sequence(ctx); err != nil {
		t.Fatal(err)
	}
	var rows, rewritten, numbered int
	err := s.Pool().QueryRow(ctx, `SELECT count(*),
    count(*) FILTER (WHERE xmin::text::bigint <> (tx_id::text::bigint % 4294967296)),
    (SELECT count(*) FROM events_notifications)
FROM events`).Scan(&rows, &rewritten, &numbered)
	if err != nil {
		t.Fatal(err)
	}
	if rows == 0 || numbered != rows {
		t.Fatalf("%d rows, %d numbered", rows, numbered)
	}
	if rewritten != 0 {
		t.Fatalf("%d of %d events rows were rewritten after their insert", rewritten, rows)
	}
}

// TestStandbyTakesOver: two stores on one table; when the active
// sequencer's store closes, the standby takes the lock and numbers what
// a third, non-sequencing writer appends.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	hooks := func() (*activity, postgres.Config) {
		a := &activity{}
		return a, postgres.Config{Hooks: a, SequencerTakeover: 20 * time.Millisecond}
	}
	ha, ca := hooks()
	a := openStore(t, dsn, ca)
	waitFor(t, "first sequencer active", ha.active.Load)
	hb, cb := hooks()
	b := openStore(t, dsn, cb)
	writer := openStore(t, dsn, postgres.Config{NoSequencer: true})
	id := uuid.New()
	if err := writer.Append(ctx, []eventstore.Record{rec(id, 0, "T")}); err != nil {
		t.Fatal(err)
	}
	if max, err := b.MaxNotificationID(ctx); err != nil || max != 1 {
		t.Fatalf("MaxNotificationID = %d, %v; want 1", max, err)
	}
	if hb.active.Load() {
		t.Fatal("two sequencers active at once")
	}
	a.Close()
	waitFor(t, "standby active", hb.active.Load)
	if err := writer.Append(ctx, []eventstore.Record{rec(id, 1, "T")}); err != nil {
		t.Fatal(err)
	}
	if max, err := writer.MaxNotificationID(ctx); err != nil || max != 2 {
		t.Fatalf("after take-over: MaxNotificationID = %d, %v; want 2", max, err)
	}
}

// TestReadWithoutSequencerReturnsWhatIsNumbered: with no sequencer
// anywhere, a read waits at most ReadWait and returns the numbered part.
func TestReadWithoutSequencerReturnsWhatIsNumbered(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	s := openStore(t, dsn, postgres.Config{NoSequencer: true, ReadWait: 20 * time.Millisecond})
	if err := s.Append(ctx, []eventstore.Record{rec(uuid.New(), 0, "T")}); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: 10})
	if err != nil || len(ns) != 0 {
		t.Fatalf("read = %d notifications, %v; want none (nothing numbers them)", len(ns), err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.Sequence(short); err == nil {
		t.Fatal("Sequence returned with nobody numbering")
	}
}

// TestReadLatencyUnderLoad follows the log while 8 writers append for
// 10 s (ESFLOW_SEQ_LOAD, a duration, changes it) and prints how long the
// reads took, how fast the sequencer numbered and whether it kept up. It
// fails only if the reader misses, repeats or reorders an event.
func TestReadLatencyUnderLoad(t *testing.T) {
	t.Parallel()
	run := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("ESFLOW_SEQ_LOAD")); err == nil {
		run = d
	}
	ha := &activity{}
	s := newStore(t, postgres.Config{Hooks: ha})
	ctx := testCtx(t)
	var appended atomic.Int64
	stop := time.Now().Add(run)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uuid.New()
			for pos := uint64(0); time.Now().Before(stop); pos += 2 {
				if err := s.Append(ctx, []eventstore.Record{rec(id, pos, "T"), rec(id, pos+1, "T")}); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				appended.Add(2)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		// The last pass must find every event: wait for all to be numbered.
		if err := s.Sequence(ctx); err != nil {
			t.Error(err)
		}
		close(done)
	}()
	var took []time.Duration
	last := map[uuid.UUID]int64{}
	next := uint64(1)
	for finished := false; ; {
		began := time.Now()
		ns, err := s.ReadNotifications(ctx, eventstore.NotificationQuery{Start: next, Limit: 500})
		took = append(took, time.Since(began))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			prev, ok := last[n.StreamID]
			if !ok {
				prev = -1
			}
			if n.ID != next || int64(n.Position) != prev+1 {
				t.Fatalf("read id %d (stream position %d after %d), want id %d", n.ID, n.Position, prev, next)
			}
			last[n.StreamID] = int64(n.Position)
			next++
		}
		if len(ns) == 0 {
			if finished {
				break
			}
			select {
			case <-done:
				finished = true
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	if got := int64(next - 1); got != appended.Load() {
		t.Fatalf("reader saw %d events, writers appended %d", got, appended.Load())
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[int(p*float64(len(took)-1))] }
	t.Logf("log read under 8 writers for %v: %d reads, p50 %v, p99 %v, max %v", run, len(took), q(0.5), q(0.99), took[len(took)-1])
	if n := ha.failures.Load(); n > 0 {
		t.Errorf("the sequencer reported %d failures", n)
	}
	t.Logf("sequencer: %d events appended (%.0f/s), %d steps, numbered %.0f events/s of step time, largest backlog %d transactions",
		appended.Load(), float64(appended.Load())/run.Seconds(), ha.steps.Load(),
		float64(ha.records.Load())/time.Duration(ha.busy.Load()).Seconds(), ha.maxBacklog.Load())
}

// activity records what a sequencer's hooks report.
type activity struct {
	active           atomic.Bool
	steps, records   atomic.Int64
	busy, maxBacklog atomic.Int64
	failures         atomic.Int64
}

func (a *activity) Sequenced(records, _, backlog int, took time.Duration) {
	a.steps.Add(1)
	a.records.Add(int64(records))
	a.busy.Add(int64(took))
	for {
		cur := a.maxBacklog.Load()
		if int64(backlog) <= cur || a.maxBacklog.CompareAndSwap(cur, int64(backlog)) {
			return
		}
	}
}

func (a *activity) SequencerActive(active bool) { a.active.Store(active) }

func (a *activity) Failed(string, error) { a.failures.Add(1) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
