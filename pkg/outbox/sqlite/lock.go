package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/esflow/esflow/internal/lockwatch"
	"github.com/esflow/esflow/pkg/outbox"
)

// Lock implements [outbox.Locker] with a lease row per shard (see the
// package documentation). It retries a held shard every Config.LockRetry
// until ctx ends. lost is closed when a renewal fails or finds the lease
// gone, and by release, which deletes the row; release is idempotent.
func (o *Outbox) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	if err := validShard(shard); err != nil {
		return nil, nil, err
	}
	if shard.Count <= 1 {
		shard = outbox.Shard{Index: 0, Count: 1}
	}
	name := strconv.Itoa(shard.Index) + "/" + strconv.Itoa(shard.Count)
	holder := newHolder()
	fail := func(err error) (<-chan struct{}, func(), error) {
		return nil, nil, fmt.Errorf("outbox/sqlite: lock shard %s: %w", name, err)
	}
	for {
		now := time.Now()
		res, err := o.db.ExecContext(ctx, o.q.take, name, holder, now.Add(o.lease).UnixMilli(), now.UnixMilli())
		if err != nil {
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			return fail(err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fail(err)
		} else if n == 1 {
			break
		}
		t := time.NewTimer(o.retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(ctx.Err())
		case <-t.C:
		}
	}

	lost, release := lockwatch.Watch(o.renew, o.lease/2,
		func(ctx context.Context) error {
			res, err := o.db.ExecContext(ctx, o.q.renew, time.Now().Add(o.lease).UnixMilli(), name, holder)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return errors.Join(errors.New("the lease is no longer this holder's"), err)
			}
			return nil
		},
		func(bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// If this fails the lease simply expires.
			_, _ = o.db.ExecContext(ctx, o.q.release, name, holder)
		})
	return lost, release, nil
}

// Wake implements [outbox.Waker] in-process only: the channel receives
// after commits made through this Outbox (a relay in another process
// relies on polling). It is closed when ctx ends.
func (o *Outbox) Wake(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbox/sqlite: wake: %w", err)
	}
	out := make(chan struct{}, 1)
	o.subsMu.Lock()
	o.subs[out] = struct{}{}
	o.subsMu.Unlock()
	go func() {
		<-ctx.Done()
		o.subsMu.Lock()
		delete(o.subs, out)
		close(out)
		o.subsMu.Unlock()
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
