package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/internal/lockwatch"
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

// Lock implements [outbox.Locker] with a session-level advisory lock
// (pg_try_advisory_lock) held on a connection taken from the pool for as
// long as the shard is owned (it counts against the pool's size). A held
// shard is retried every Config.LockRetry until ctx ends. While held, the
// connection is pinged every Config.PingInterval; if a ping fails the
// lock must be presumed gone (PostgreSQL frees it when the session ends)
// and lost is closed. release unlocks, returns the connection to the pool
// and closes lost; it is idempotent.
func (o *Outbox) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	if err := validShard(shard); err != nil {
		return nil, nil, err
	}
	key := LockKey(o.table, shard)
	fail := func(err error) (<-chan struct{}, func(), error) {
		return nil, nil, fmt.Errorf("outbox/postgres: lock shard %d/%d: %w", shard.Index, shard.Count, err)
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

	lost, release := lockwatch.Watch(o.ping, max(o.ping, time.Second),
		func(ctx context.Context) error { return conn.Ping(ctx) },
		func(failed bool) {
			if failed {
				discard(conn)
				return
			}
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var unlocked bool
			if err := conn.QueryRow(uctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&unlocked); err != nil || !unlocked {
				// Closing the session frees the lock for certain.
				discard(conn)
				return
			}
			conn.Release()
		})
	return lost, release, nil
}

// discard closes a pooled connection and releases it, so the pool drops
// it (and with it any session state such as advisory locks).
func discard(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}
