package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/lockwatch"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// LockKey is the advisory lock key of a shard of an outbox table. All
// replicas must use the same shard count: shards 0/2 and 0/4 are
// different locks.
func LockKey(table string, shard outbox.Shard) int64 {
	if shard.Count <= 1 {
		shard = outbox.Shard{Index: 0, Count: 1}
	}
	return lockKey("esflow:outbox:" + table + ":" + strconv.Itoa(shard.Index) + "/" + strconv.Itoa(shard.Count))
}

// Lock implements [outbox.Locker]: [Outbox.LockFenced] without the fence.
func (o *Outbox) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	_, lost, release, err := o.LockFenced(ctx, shard)
	return lost, release, err
}

// LockFenced implements [outbox.FencedLocker] with a session-level
// advisory lock (pg_try_advisory_lock) and a lease row beside it.
//
// The lock is held on a connection taken from the pool for as long as
// the shard is owned (it counts against the pool's size); a held shard
// is retried every Config.LockRetry until ctx ends. Once it has the lock,
// LockFenced claims the shard's lease row (a new generation, expiring
// Config.Lease from now) and, if the previous owner's lease has not
// expired yet, waits until it has: that owner may be paused with a batch
// in hand, and its fence only fails at its lease's end. While held, the
// lease is renewed every Config.PingInterval on the lock's connection;
// the fence holds until Lease after the last renewal was sent. A failed
// renewal closes lost. The lock's session ends on its own after Lease of
// silence (idle_session_timeout), so a paused holder does not keep the
// shard. release closes the connection, which frees the lock, and closes
// lost; it is idempotent.
func (o *Outbox) LockFenced(ctx context.Context, shard outbox.Shard) (outbox.Fence, <-chan struct{}, func(), error) {
	if err := validShard(shard); err != nil {
		return nil, nil, nil, err
	}
	key := LockKey(o.table, shard)
	fail := func(err error) (outbox.Fence, <-chan struct{}, func(), error) {
		return nil, nil, nil, fmt.Errorf("outbox/postgres: lock shard %d/%d: %w", shard.Index, shard.Count, err)
	}
	conn, err := o.pool.Acquire(ctx)
	if err != nil {
		return fail(fmt.Errorf("acquire connection: %w", err))
	}
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
			discard(conn)
			return fail(err)
		}
		if ok {
			break
		}
		t := time.NewTimer(o.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			conn.Release()
			return fail(ctx.Err())
		case <-t.C:
		}
	}
	f, err := o.claimLease(ctx, conn, key)
	if err != nil {
		discard(conn)
		return fail(err)
	}
	lost, release := lockwatch.Watch(o.ping, max(o.ping, time.Second),
		func(ctx context.Context) error { return f.renew(ctx, conn) },
		// The connection carries the lease's session settings: it is
		// closed rather than returned to the pool, which frees the lock.
		func(failed bool) {
			// Revoke the fence first: a produce retry still running in
			// the background checks it. Then the lease can end now, and a
			// successor need not wait for it.
			f.revoke()
			if !failed {
				ectx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, _ = conn.Exec(ectx, f.endSQL, f.key, f.gen)
				cancel()
			}
			discard(conn)
		})
	return f, lost, release, nil
}

// fence is a lease held on one connection. until is the deadline in
// nanoseconds after base, read through base's monotonic clock, so wall
// clock steps do not move it.
type fence struct {
	o        *Outbox
	key      int64
	gen      int64
	renewSQL string
	endSQL   string
	base     time.Time
	until    atomic.Int64
}

var _ outbox.Fence = (*fence)(nil)

// Check implements [outbox.Fence].
func (f *fence) Check() error {
	if time.Since(f.base) < time.Duration(f.until.Load()) {
		return nil
	}
	return fmt.Errorf("outbox/postgres: lease generation %d: %w", f.gen, outbox.ErrFenced)
}

// Deadline implements [outbox.Fence].
func (f *fence) Deadline() time.Time { return f.base.Add(time.Duration(f.until.Load())) }

// extend moves the deadline to Lease after sent, the moment a renewal
// that succeeded was sent: the server computed its expiry as now() +
// Lease, later than that. A tenth of the lease is kept as a margin for a
// produce request sent just before the deadline to reach the broker.
func (f *fence) revoke() { f.until.Store(math.MinInt64) }

func (f *fence) extend(sent time.Time) {
	f.until.Store(int64(sent.Sub(f.base) + f.o.lease - f.o.lease/10))
}

// lease statements. $2 is the lease as a number of milliseconds.
const (
	// claimLease takes a new generation and reports how long the previous
	// one still runs, computed by the server alone (no clock is compared
	// with another machine's). The CTE reads the row as it was before
	// the upsert.
	claimLeaseSQL = `WITH prev AS (SELECT expires_at FROM %[1]s WHERE lock_key = $1)
INSERT INTO %[1]s AS l (lock_key, generation, holder_pid, expires_at)
VALUES ($1, 1, pg_backend_pid(), now() + $2 * interval '1 millisecond')
ON CONFLICT (lock_key) DO UPDATE
    SET generation = l.generation + 1, holder_pid = excluded.holder_pid, expires_at = excluded.expires_at
RETURNING generation,
    coalesce(greatest(0, extract(epoch FROM (SELECT expires_at FROM prev) - now()) * 1000), 0)::float8`
	renewLeaseSQL = `UPDATE %[1]s SET expires_at = now() + $3 * interval '1 millisecond'
WHERE lock_key = $1 AND generation = $2`
	// endLease is a clean release: the holder has stopped publishing and
	// revoked its fence.
	endLeaseSQL = `UPDATE %[1]s SET expires_at = now() WHERE lock_key = $1 AND generation = $2`
)

// sessionSettings make the lock's session end by itself after a lease of
// silence (a paused or partitioned holder then frees the lock, and the
// lease it could still believe in has run out too), and make lease
// writes durable whatever the database's default: a renewal lost in a
// crash would let a successor start before the lease it extended ended.
const sessionSettingsSQL = `SELECT set_config('idle_session_timeout', $1, false), set_config('synchronous_commit', 'on', false)`

// undefinedParameter is SQLSTATE 42704, raised by set_config for a
// setting the server does not know (idle_session_timeout before 14).
const undefinedParameter = "42704"

func (o *Outbox) claimLease(ctx context.Context, conn *pgxpool.Conn, key int64) (*fence, error) {
	ms := o.lease.Milliseconds()
	if _, err := conn.Exec(ctx, sessionSettingsSQL, strconv.FormatInt(ms, 10)); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != undefinedParameter {
			return nil, fmt.Errorf("lease session settings: %w", err)
		}
		// Without idle_session_timeout a paused holder keeps the lock
		// until its session is dropped some other way; the fence still
		// stops it from publishing once it resumes.
		if _, err := conn.Exec(ctx, `SELECT set_config('synchronous_commit', 'on', false)`); err != nil {
			return nil, fmt.Errorf("lease session settings: %w", err)
		}
	}
	leases := eventstore.Quote(o.table + "_lease")
	f := &fence{o: o, key: key, renewSQL: fmt.Sprintf(renewLeaseSQL, leases), endSQL: fmt.Sprintf(endLeaseSQL, leases), base: time.Now()}
	var waitMS float64
	if err := conn.QueryRow(ctx, fmt.Sprintf(claimLeaseSQL, leases), key, ms).Scan(&f.gen, &waitMS); err != nil {
		return nil, fmt.Errorf("claim lease: %w", err)
	}
	if waitMS > 0 {
		t := time.NewTimer(time.Duration(waitMS * float64(time.Millisecond)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	// The wait may have used up most of the claimed lease: renew it, which
	// also proves the session survived the wait.
	if err := f.renew(ctx, conn); err != nil {
		return nil, err
	}
	return f, nil
}

// renew extends the lease, failing if the session or the lease is gone.
func (f *fence) renew(ctx context.Context, conn *pgxpool.Conn) error {
	sent := time.Now()
	tag, err := conn.Exec(ctx, f.renewSQL, f.key, f.gen, f.o.lease.Milliseconds())
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("renew lease: generation %d superseded: %w", f.gen, outbox.ErrFenced)
	}
	f.extend(sent)
	return nil
}

// discard closes a pooled connection and releases it, so the pool drops
// it (and with it any session state such as advisory locks).
func discard(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}
