package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/esflow/esflow/internal/lockwatch"
	"github.com/esflow/esflow/pkg/outbox"
)

// LockName is the server lock name argument of a shard: the lock is
// GET_LOCK(CONCAT('esflow_outbox_', SHA1(CONCAT(DATABASE(), '/', name)))),
// so it is scoped to the database (server locks are server-wide) and fits
// the 64-character limit. All replicas must use the same shard count:
// shards 0/2 and 0/4 are different locks.
func LockName(table string, shard outbox.Shard) string {
	if shard.Count <= 1 {
		shard = outbox.Shard{Index: 0, Count: 1}
	}
	return table + ":" + strconv.Itoa(shard.Index) + "/" + strconv.Itoa(shard.Count)
}

const lockExpr = `CONCAT('esflow_outbox_', SHA1(CONCAT(DATABASE(), '/', ?)))`

// Lock implements [outbox.Locker] with a named server lock (GET_LOCK)
// held by a connection taken from the pool for as long as the shard is
// owned. A held shard is retried every Config.LockRetry until ctx ends.
// The server frees the lock when the session ends, so a crashed holder's
// shard is free as soon as its connection drops. While held, the
// connection checks every Config.PingInterval that the lock is still its
// own (IS_USED_LOCK = CONNECTION_ID()); if not, or if the check fails,
// lost is closed. release unlocks, returns the connection to the pool (or
// discards it if unlocking failed) and closes lost; it is idempotent.
func (o *Outbox) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	if err := validShard(shard); err != nil {
		return nil, nil, err
	}
	name := LockName(o.table, shard)
	fail := func(err error) (<-chan struct{}, func(), error) {
		return nil, nil, fmt.Errorf("outbox/mysql: lock shard %d/%d: %w", shard.Index, shard.Count, err)
	}
	conn, err := o.db.Conn(ctx)
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(`+lockExpr+`, 0)`, name).Scan(&got); err != nil {
			discard(conn)
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			return fail(err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		t := time.NewTimer(o.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = conn.Close()
			return fail(ctx.Err())
		case <-t.C:
		}
	}

	lost, release := lockwatch.Watch(o.ping, max(o.ping, time.Second),
		func(ctx context.Context) error {
			var mine sql.NullBool
			if err := conn.QueryRowContext(ctx, `SELECT IS_USED_LOCK(`+lockExpr+`) = CONNECTION_ID()`, name).Scan(&mine); err != nil {
				return err
			}
			if !mine.Valid || !mine.Bool {
				return errors.New("the lock is no longer this session's")
			}
			return nil
		},
		func(failed bool) {
			if failed {
				discard(conn)
				return
			}
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := conn.ExecContext(rctx, `DO RELEASE_LOCK(`+lockExpr+`)`, name); err != nil {
				discard(conn) // closing the session frees the lock
				return
			}
			_ = conn.Close()
		})
	return lost, release, nil
}

// discard closes conn's session instead of returning it to the pool.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// Wake implements [outbox.Waker]. MariaDB has no LISTEN/NOTIFY, so the
// channel receives (coalesced, without blocking) after commits made
// through this Outbox, and whenever the outbox's highest id has grown
// since the last look, checked every Config.WakePollInterval: a relay in
// another process, given this Outbox as its Waker, learns of new rows
// within about that interval. A message whose smaller id commits after a
// larger one already seen is not signalled; the relay's own poll
// (relay.Config.PollInterval) picks it up. The channel is closed when ctx
// ends.
func (o *Outbox) Wake(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbox/mysql: wake: %w", err)
	}
	out := make(chan struct{}, 1)
	o.subsMu.Lock()
	o.subs[out] = struct{}{}
	o.subsMu.Unlock()
	go func() {
		defer func() {
			o.subsMu.Lock()
			delete(o.subs, out)
			close(out)
			o.subsMu.Unlock()
		}()
		t := time.NewTicker(o.wakePoll)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var top int64
			if err := o.queryRow(ctx, o.q.maxID, nil, &top); err != nil {
				continue // a hint only; the relay polls too
			}
			if last >= 0 && top != last {
				o.signal()
			}
			last = top
		}
	}()
	return out, nil
}

// signal wakes every Wake channel without blocking.
func (o *Outbox) signal() {
	o.subsMu.Lock()
	defer o.subsMu.Unlock()
	for sub := range o.subs {
		select {
		case sub <- struct{}{}:
		default:
		}
	}
}
