package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/projection"
)

// TestProcessPausedOwnerIsFenced freezes (SIGSTOP) a projector in the
// middle of a transaction, lets a second projector take its partitions
// over once the frozen one's heartbeat is stale, and resumes the first
// one (SIGCONT) while the new owner waits to apply the same event: the
// resumed transaction must not commit — the lease generation it checks
// moved on — and the read model must stay exact.
//
// To freeze the owner inside its transaction rather than anywhere, the
// test holds a lock on one world's row: the owner's batch with that
// world's next event waits for it inside the transaction, the test sees
// it waiting (pg_stat_activity) and stops the process. When the test lets
// the row go, the frozen owner's database session takes it (its
// statement completes, its client sleeps), so the new owner's batch with
// the same event waits behind it until the old owner resumes and its
// commit is refused.
func TestProcessPausedOwnerIsFenced(t *testing.T) {
	ctx := context.Background()
	s := newStack(t)
	s.startRelay()
	a := s.startProjector("owner-a", "-lease-ttl", "1s")
	s.waitAssignment(1, 60*time.Second)

	w, err := domain.NewWorld("ruler")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.app.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	worldURL := a.base + "/worlds/" + w.ID().String()
	waitWorld(t, worldURL, w.Version())

	pool, err := pgxpool.New(ctx, s.rmURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	hold, err := pgx.Connect(ctx, s.rmURL)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close(ctx)
	tx, err := hold.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM worlds WHERE id = $1 FOR UPDATE`, w.ID().String()); err != nil {
		t.Fatal(err)
	}
	if err := w.MakeItSo("while frozen"); err != nil {
		t.Fatal(err)
	}
	if err := s.app.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	// Wait for the session blocked by this very lock: any lock wait in the
	// database (a lease statement behind a commit, say) would freeze the
	// owner elsewhere, and then nothing would hold the row after the
	// rollback below.
	frozenPID := waitBlockedBy(t, pool, hold.PgConn().PID(), "owner-a's transaction waiting for the held row")
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			_ = a.Signal(syscall.SIGCONT)
		}
	}()
	genBefore := worldLeaseGeneration(t, pool, w.ID().String())

	b := s.startProjector("owner-b", "-lease-ttl", "1s")
	proctest.Eventually(t, 60*time.Second, 10*time.Millisecond, "owner-b holding every worlds partition", func() (bool, string) {
		as, err := s.assignment(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(as["worlds"]) == 1 && len(as["worlds"]["owner-b"]) == partitions, fmt.Sprint(as["worlds"])
	})
	tookOver := time.Since(frozen)
	if g := worldLeaseGeneration(t, pool, w.ID().String()); g <= genBefore {
		t.Fatalf("lease generation %d after the takeover, was %d", g, genBefore)
	}
	// Let the row go: owner-a's session takes it, owner-b's batch with the
	// same event queues behind it.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitBlockedBy(t, pool, frozenPID, "owner-b's transaction waiting behind the frozen one")
	if err := a.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	const fenced = `esflow_projection_failures_total{op="lease",projection="worlds"}`
	proctest.Eventually(t, 30*time.Second, 20*time.Millisecond, "owner-a's transaction fenced", func() (bool, string) {
		n, ok, err := proctest.Metric(a.base+"/metrics", fenced)
		return err == nil && ok && n > 0, fmt.Sprintf("%s = %v (%v, %v)", fenced, n, ok, err)
	})
	waitWorld(t, b.base+"/worlds/"+w.ID().String(), w.Version())

	// Both keep working: owner-a rejoins and gets its share back.
	stop := s.startWriters(2, 5, 5*time.Millisecond)
	waitEvents(t, s, s.eventCount()+300, 60*time.Second)
	stop()
	s.waitAssignment(2, 60*time.Second)
	want := s.expected()
	s.converge(want, 60*time.Second, a, b)
	t.Logf("owner-a frozen mid-transaction; owner-b held every worlds partition %s later; owner-a's resumed transaction was refused; %d events, read model exact",
		tookOver.Round(time.Millisecond), want.Events)
}

// waitBlockedBy waits until a session of the read model's database is
// blocked by the session with process id pid and returns that session's
// process id. On timeout the failure lists every session that is not
// idle, with what it waits for and its statement.
func waitBlockedBy(t *testing.T, pool *pgxpool.Pool, pid uint32, what string) uint32 {
	t.Helper()
	ctx := context.Background()
	var blocked uint32
	proctest.Eventually(t, 30*time.Second, 5*time.Millisecond, what, func() (bool, string) {
		err := pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND $1::int = ANY(pg_blocking_pids(pid)) LIMIT 1`, int32(pid)).Scan(&blocked)
		if err == nil {
			return true, ""
		}
		return false, fmt.Sprintf("nothing blocked by pid %d (%v); sessions:\n%s", pid, err, activity(ctx, pool))
	})
	return blocked
}

// activity describes the read model database's sessions that are not
// idle: pid, state, wait event, blockers and the start of the statement.
func activity(ctx context.Context, pool *pgxpool.Pool) string {
	rows, err := pool.Query(ctx, `SELECT format('pid %s %s wait=%s/%s blocked_by=%s: %s', pid, state,
	coalesce(wait_event_type, '-'), coalesce(wait_event, '-'), pg_blocking_pids(pid), left(query, 120))
FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()`)
	if err != nil {
		return err.Error()
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err.Error()
	}
	return strings.Join(lines, "\n")
}

// waitWorld waits until the projector at url serves the world at version.
func waitWorld(t *testing.T, url string, version uint64) {
	t.Helper()
	proctest.Eventually(t, 30*time.Second, 10*time.Millisecond, "world at version "+strconv.FormatUint(version, 10), func() (bool, string) {
		var got readmodel.World
		status, err := getJSONErr(url, &got)
		return err == nil && status == http.StatusOK && got.Version >= version, fmt.Sprintf("status %d, version %d, %v", status, got.Version, err)
	})
}

// worldLeaseGeneration returns the generation of the worlds lease of the
// partition that holds the aggregate id.
func worldLeaseGeneration(t *testing.T, pool *pgxpool.Pool, id string) int64 {
	t.Helper()
	part := worldPartition(id)
	var g int64
	if err := pool.QueryRow(context.Background(), `SELECT generation FROM `+projection.LeasesTable+`
WHERE projection = 'worlds' AND topic = $1 AND kafka_partition = $2`, readmodel.WorldTopic, part).Scan(&g); err != nil {
		t.Fatal(err)
	}
	return g
}

// worldPartition is the partition of the World topic that holds an
// aggregate's events: the relay keys messages by aggregate id and maps
// keys with Murmur2, like kafka.Murmur2Balancer.
func worldPartition(id string) int {
	all := make([]int, partitions)
	for i := range all {
		all[i] = i
	}
	return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(id)}, all...)
}
