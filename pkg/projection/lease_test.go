package projection_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/projection"
)

// Two runners of one projection on one database share its partitions,
// both apply, and when one stops the other takes its partitions over
// from the offsets it committed: every event is applied exactly once.
// On SQLite, where only the heartbeat tells a member's liveness, this is
// the same path as on PostgreSQL for a clean stop (the stopping runner
// releases its leases).
func TestRunnersShareAndHandOverPartitions(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := startBroker(t)
			w := newWriter(t, b.Addr())
			db := be.open(t)
			p := newCounts("shared_counts")
			cfg := config(b)
			cfg.LeaseTTL = time.Second
			ra, err := projection.NewRunner(db, p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			rb, err := projection.NewRunner(db, p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stopA, stopB := run(t, ra), run(t, rb)
			eventually(t, "both runners holding half of the partitions", 30*time.Second, func() bool {
				return ra.Status().Leases == 4 && rb.Status().Leases == 4
			})

			first := worldEvents(t, 40, 3)
			produce(t, w, messages(t, flatten(first)))
			waitAll(t, rb, first)
			if ra.Status().Applied == 0 || rb.Status().Applied == 0 {
				t.Fatalf("applied %d and %d: both runners should have applied events", ra.Status().Applied, rb.Status().Applied)
			}

			if err := stopA(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			eventually(t, "the remaining runner holding every partition", 30*time.Second, func() bool {
				return rb.Status().Leases == 8
			})
			second := worldEvents(t, 40, 3)
			produce(t, w, messages(t, flatten(second)))
			waitAll(t, rb, second)
			if err := stopB(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// The offsets moved with the leases: nothing was read twice.
			a, bs := ra.Status(), rb.Status()
			if a.Applied+bs.Applied != 240 || a.Duplicates+bs.Duplicates != 0 {
				t.Fatalf("applied %d+%d, duplicates %d+%d; want 240 applied, no duplicate", a.Applied, bs.Applied, a.Duplicates, bs.Duplicates)
			}
			want := fmt.Sprintf("World=%d\n", 240)
			for _, g := range sortedGroups(append(first, second...)) {
				want += fmt.Sprintf("%s v%d %s\n", g.id, g.version, g.typ)
			}
			got, err := readModel(ctx, db, ra.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("read model:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// waitAll waits until r's read model includes every event of groups.
func waitAll(t *testing.T, r *projection.Runner, groups [][]aggregate.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, g := range groups {
		last := g[len(g)-1]
		if err := r.WaitFor(ctx, last.AggregateID, last.Version); err != nil {
			t.Fatal(err)
		}
	}
}

// On PostgreSQL the members wake each other with notifications: with a
// LeaseCheck of an hour, a joining runner still gets its share at once,
// and a stopping one's partitions are taken over at once.
func TestHandOversAreNotified(t *testing.T) {
	b := startBroker(t)
	db := openPostgres(t)
	p := newCounts("notified_counts")
	cfg := config(b)
	cfg.LeaseCheck, cfg.LeaseTTL, cfg.HeartbeatInterval = time.Hour, 2*time.Hour, time.Hour
	ra, err := projection.NewRunner(db, p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopA := run(t, ra)
	eventually(t, "the first runner holding every partition", 20*time.Second, func() bool {
		return ra.Status().Leases == 8
	})
	rb, err := projection.NewRunner(db, p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, rb)
	eventually(t, "the joining runner given its share", 20*time.Second, func() bool {
		return ra.Status().Leases == 4 && rb.Status().Leases == 4
	})
	if err := stopA(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	eventually(t, "the remaining runner holding every partition", 20*time.Second, func() bool {
		return rb.Status().Leases == 8
	})
	groups := worldEvents(t, 20, 2)
	produce(t, newWriter(t, b.Addr()), messages(t, flatten(groups)))
	waitAll(t, rb, groups)
}

// A member's heartbeat moves its seen_ms on the database's clock, on
// both databases (PostgreSQL sends it as one statement outside a
// transaction).
func TestHeartbeatsRenewMembership(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := startBroker(t)
			db := be.open(t)
			cfg := config(b)
			cfg.LeaseTTL, cfg.HeartbeatInterval, cfg.LeaseCheck = 2*time.Second, 50*time.Millisecond, 20*time.Millisecond
			r, err := projection.NewRunner(db, newCounts("beating"), cfg)
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			eventually(t, "every partition leased", 20*time.Second, func() bool { return r.Status().Leases == 8 })
			seen := func() int64 {
				var ms int64
				if err := db.InTx(ctx, func(tx projection.Tx) error {
					return tx.QueryRow(ctx, `SELECT seen_ms FROM `+projection.MembersTable+` WHERE projection = $1`, "beating").Scan(&ms)
				}); err != nil {
					t.Fatal(err)
				}
				return ms
			}
			first := seen()
			eventually(t, "a later heartbeat", 10*time.Second, func() bool { return seen() > first })
		})
	}
}

// A runner started with a JoinDelay while another member is alive waits
// outside the membership (the other applies every partition), and joins
// as soon as it is alone: with a delay of an hour, stopping the only
// other member hands it every partition, and it goes on from the
// offsets that member committed.
func TestJoinDelayWaitsWhileOthersApply(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t)
			w := newWriter(t, b.Addr())
			db := be.open(t)
			p := newCounts("delayed_counts")
			cfg := config(b)
			cfg.LeaseTTL = time.Second
			ra, err := projection.NewRunner(db, p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stopA := run(t, ra)
			eventually(t, "the first runner holding every partition", 30*time.Second, func() bool {
				return ra.Status().Leases == 8
			})

			var logs syncBuffer
			cfgB := cfg
			cfgB.JoinDelay = time.Hour
			cfgB.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			rb, err := projection.NewRunner(db, p, cfgB)
			if err != nil {
				t.Fatal(err)
			}
			stopB := run(t, rb)
			eventually(t, "the second runner waiting to join", 30*time.Second, func() bool {
				return strings.Contains(logs.String(), "joining after the join delay")
			})
			first := worldEvents(t, 20, 3)
			produce(t, w, messages(t, flatten(first)))
			waitAll(t, ra, first)
			if n := members(t, db, "delayed_counts"); n != 1 || rb.Status().Leases != 0 {
				t.Fatalf("%d members, the delayed runner holding %d partitions; want 1 member, 0 partitions", n, rb.Status().Leases)
			}

			if err := stopA(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			eventually(t, "the delayed runner, now alone, holding every partition", 30*time.Second, func() bool {
				return rb.Status().Leases == 8
			})
			// The first runner applied everything: each partition's first
			// fetch finds nothing waiting, and says so (the fault suite's
			// hand-over measure ends a window there).
			eventually(t, "every partition caught up", 30*time.Second, func() bool {
				return strings.Count(logs.String(), `msg="partition caught up"`) == 8
			})
			second := worldEvents(t, 20, 3)
			produce(t, w, messages(t, flatten(second)))
			waitAll(t, rb, second)
			if err := stopB(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			a, bs := ra.Status(), rb.Status()
			if a.Applied != 60 || bs.Applied != 60 || a.Duplicates+bs.Duplicates != 0 {
				t.Fatalf("applied %d and %d, duplicates %d+%d; want 60 each, no duplicate", a.Applied, bs.Applied, a.Duplicates, bs.Duplicates)
			}
		})
	}
}

// members counts the rows of projection name in the members table.
func members(t testing.TB, db projection.DB, name string) int {
	t.Helper()
	ctx := context.Background()
	var n int
	if err := db.InTx(ctx, func(tx projection.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM `+projection.MembersTable+` WHERE projection = $1`, name).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
