package projection_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/projection"
)

// TestTransactions covers what both adapters must do whatever the first
// statement of a transaction is (the PostgreSQL one pipelines BEGIN with
// it): commit on nil, roll back on error, survive a failed statement.
func TestTransactions(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := be.open(t)
			count := func() int64 {
				t.Helper()
				var n int64
				if err := db.InTx(ctx, func(tx projection.Tx) error {
					return tx.QueryRow(ctx, `SELECT COUNT(*) FROM tx_probe`).Scan(&n)
				}); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// Several statements without arguments in one Exec, first.
			if err := db.InTx(ctx, func(tx projection.Tx) error {
				_, err := tx.Exec(ctx, `CREATE TABLE tx_probe (x INTEGER PRIMARY KEY); INSERT INTO tx_probe VALUES (1)`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if n := count(); n != 1 {
				t.Fatalf("count %d after the first transaction, want 1", n)
			}
			errFail := errors.New("fail")
			steps := []struct {
				name    string
				fn      func(tx projection.Tx) error
				wantErr bool
				want    int64
			}{
				{"nothing", func(projection.Tx) error { return nil }, false, 1},
				{"exec with args then commit", func(tx projection.Tx) error {
					n, err := tx.Exec(ctx, `INSERT INTO tx_probe VALUES ($1), ($2)`, 2, 3)
					if err == nil && n != 2 {
						t.Errorf("rows affected %d, want 2", n)
					}
					return err
				}, false, 3},
				{"query first then exec", func(tx projection.Tx) error {
					rows, err := tx.Query(ctx, `SELECT x FROM tx_probe WHERE x > $1 ORDER BY x`, 1)
					if err != nil {
						return err
					}
					var got []int
					for rows.Next() {
						var x int
						if err := rows.Scan(&x); err != nil {
							rows.Close()
							return err
						}
						got = append(got, x)
					}
					rows.Close()
					if err := rows.Err(); err != nil {
						return err
					}
					if len(got) != 2 {
						t.Errorf("rows %v, want [2 3]", got)
					}
					_, err = tx.Exec(ctx, `DELETE FROM tx_probe WHERE x = $1`, 3)
					return err
				}, false, 2},
				{"error rolls back", func(tx projection.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO tx_probe VALUES ($1)`, 4); err != nil {
						return err
					}
					return errFail
				}, true, 2},
				{"failed first statement", func(tx projection.Tx) error {
					_, err := tx.Exec(ctx, `INSERT INTO tx_probe VALUES ($1)`, 1) // duplicate key
					return err
				}, true, 2},
				{"failed query", func(tx projection.Tx) error {
					rows, err := tx.Query(ctx, `SELECT no_such_column FROM tx_probe WHERE x = $1`, 1)
					if err == nil {
						for rows.Next() {
						}
						rows.Close()
						err = rows.Err()
					}
					return err
				}, true, 2},
				{"no row", func(tx projection.Tx) error {
					var x int
					err := tx.QueryRow(ctx, `SELECT x FROM tx_probe WHERE x = $1`, 99).Scan(&x)
					if !errors.Is(err, projection.ErrNoRows) {
						t.Errorf("scan error %v, want ErrNoRows", err)
					}
					_, err = tx.Exec(ctx, `INSERT INTO tx_probe VALUES ($1)`, 5)
					return err
				}, false, 3},
			}
			for _, s := range steps {
				err := db.InTx(ctx, s.fn)
				if (err != nil) != s.wantErr {
					t.Fatalf("%s: error %v, want error %v", s.name, err, s.wantErr)
				}
				if s.name == "error rolls back" && !errors.Is(err, errFail) {
					t.Fatalf("%s: error %v, want the fn's", s.name, err)
				}
				if n := count(); n != s.want {
					t.Fatalf("%s: count %d, want %d", s.name, n, s.want)
				}
			}
		})
	}
}

// racer is the counts projection with another consumer in the way: while
// its batch holding target is open, a separate transaction applies target
// first (moves its tracking), as an instance overlapping during a
// rebalance would.
type racer struct {
	*counts
	db      projection.DB
	target  uuid.UUID
	version uint64
	once    sync.Once
}

func (r *racer) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	for _, e := range events {
		if e.AggregateID != r.target {
			continue
		}
		var err error
		r.once.Do(func() {
			err = r.db.InTx(ctx, func(other projection.Tx) error {
				_, err := other.Exec(ctx, `INSERT INTO `+projection.TrackingTable+` (projection, aggregate_id, version, event_id)
VALUES ($1, $2, $3, $4)`, r.name, e.AggregateID.String(), int64(r.version), e.EventID.String())
				return err
			})
		})
		if err != nil {
			return err
		}
	}
	return r.counts.HandleBatch(ctx, tx, t, events)
}

// TestConcurrentApplyRollsBack: when another transaction moved an
// aggregate's tracking while a batch was applied, the batch's tracking
// upsert sees it, the whole batch (handler writes included) rolls back,
// and the retry counts that event as a duplicate and applies the rest
// once. PostgreSQL only: SQLite has a single writer, so the overlap
// cannot happen there.
func TestConcurrentApplyRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := startBroker(t)
	groups := worldEvents(t, 30, 2)
	w := newWriter(t, b.Addr())
	produce(t, w, messages(t, flatten(groups)))
	db := openPostgres(t)
	target := groups[7]
	p := &racer{counts: newCounts("race_counts"), db: db, target: target[1].AggregateID, version: target[1].Version}
	cfg := config(b)
	failures := &failureHooks{}
	cfg.Hooks = failures
	r, err := projection.NewRunner(db, p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, g := range groups {
		if err := r.WaitFor(wctx, g[1].AggregateID, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The overlap is recognised as such (re-read at once), not reported
	// as a database failure.
	if errs := failures.errors(); len(errs) > 0 {
		t.Fatalf("failures reported: %v", errs)
	}
	st := r.Status()
	// The target's two events: both skipped as already applied.
	if st.Applied != 58 || st.Duplicates != 2 {
		t.Fatalf("applied %d duplicates %d, want 58/2", st.Applied, st.Duplicates)
	}
	got, err := readModel(ctx, db, r.Tables())
	if err != nil {
		t.Fatal(err)
	}
	want := "World=58\n"
	for _, g := range sortedGroups(groups) {
		if g.id != target[0].AggregateID.String() {
			want += fmt.Sprintf("%s v%d %s\n", g.id, g.version, g.typ)
		}
	}
	if got != want {
		t.Fatalf("read model:\n%s\nwant:\n%s", got, want)
	}
}

type failureHooks struct {
	projection.NoHooks
	mu   sync.Mutex
	errs []error
}

func (h *failureHooks) Failed(op string, err error) {
	h.mu.Lock()
	h.errs = append(h.errs, fmt.Errorf("%s: %w", op, err))
	h.mu.Unlock()
}

func (h *failureHooks) errors() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}
