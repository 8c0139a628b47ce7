package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/pkg/eventstore"
)

// Backoff bounds for re-establishing a lost LISTEN connection.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// committed runs after a successful commit that wrote messages: it wakes
// this process's Wake channels directly and kicks the notifier, without
// blocking (a pending kick already covers this commit).
func (o *Outbox) committed() {
	o.signalLocal()
	if o.closed() {
		return
	}
	o.notifyOnce.Do(func() {
		o.wg.Add(1)
		go o.notifier()
	})
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// notifier sends one NOTIFY per drained kick. While one NOTIFY is in
// flight, and for Config.NotifyInterval after it, later commits collapse
// into a single pending kick, so a burst of commits costs a few NOTIFYs,
// and none of them inside a writer's transaction. Without the interval a
// NOTIFY round trip (~50 µs) is shorter than the gap between commits of
// 8 writers, and 3 of 4 saves still paid for a NOTIFY transaction of
// their own. It NOTIFYs on a connection of its own, outside the pool:
// taking a pooled connection would make a writer wait for it whenever the
// pool is busy (with one connection, every save waited for the NOTIFY
// round trip of the save before). If that connection cannot be made, it
// falls back to the pool.
func (o *Outbox) notifier() {
	defer o.wg.Done()
	base, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		select {
		case <-o.stop:
			stop()
		case <-base.Done():
		}
	}()
	var conn *pgx.Conn
	defer func() {
		o.notifierPID.Store(0) // a later backend may get the same pid
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		select {
		case <-o.stop:
			return
		case <-o.kick:
		}
		ctx, cancel := context.WithTimeout(base, 5*time.Second)
		if conn == nil {
			// NOTIFY gives its transaction an xid, so its commit writes
			// WAL, and with synchronous_commit on it waits for a flush
			// that the writers' commits then queue behind. A NOTIFY lost
			// in a crash is only a lost hint (relays poll), so it need
			// not wait: with it off, one writer saved 0.92-0.96× the raw
			// rate against 1.00-1.02× (go run ./cmd/esbench -only w1,
			// 1 event/tx, c=1, alternating builds).
			cc := o.pool.Config().ConnConfig.Copy()
			if cc.RuntimeParams == nil {
				cc.RuntimeParams = map[string]string{}
			}
			cc.RuntimeParams["synchronous_commit"] = "off"
			if c, err := pgx.ConnectConfig(ctx, cc); err == nil {
				conn = c
				o.notifierPID.Store(c.PgConn().PID())
			}
		}
		// A failed NOTIFY is only a lost hint: relays poll as a fallback.
		if conn != nil {
			if _, err := conn.Exec(ctx, notifySQL, o.channel); err != nil {
				o.notifierPID.Store(0)
				closeConn(conn)
				conn = nil
			}
		} else {
			_, _ = o.pool.Exec(ctx, notifySQL, o.channel)
		}
		cancel()
		if o.gap > 0 {
			t := time.NewTimer(o.gap)
			select {
			case <-o.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

const notifySQL = `SELECT pg_notify($1, '')`

func (o *Outbox) signalLocal() {
	o.subsMu.Lock()
	defer o.subsMu.Unlock()
	for sub := range o.subs {
		select {
		case sub <- struct{}{}:
		default:
		}
	}
}

func nudge(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// listen opens a dedicated connection (outside the pool) and LISTENs on
// the channel.
func (o *Outbox) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg := o.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+eventstore.Quote(o.channel)); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// Wake implements [outbox.Waker]. The returned channel (buffered, one
// pending wake-up at most) receives after commits of any process writing
// to this outbox table: Wake LISTENs on the channel on a dedicated
// connection, and the writers' notifiers NOTIFY after their commits.
// Commits made through this Outbox also wake it directly, without a round
// trip. A lost connection is re-established with backoff, after which the
// channel receives once (notifications may have been missed). The channel
// is closed when ctx ends.
func (o *Outbox) Wake(ctx context.Context) (<-chan struct{}, error) {
	conn, err := o.listen(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox/postgres: wake: %w", err)
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
		backoff := minBackoff
		for {
			if conn != nil {
				for {
					n, err := conn.WaitForNotification(ctx)
					if err != nil {
						break
					}
					// This Outbox's own NOTIFY: the commits it stands
					// for woke out directly before it was sent (see
					// committed). Waking again would only make a relay
					// fetch an empty batch; at 500 commits a second that
					// was one empty fetch per commit.
					if pid := o.notifierPID.Load(); pid != 0 && n.PID == pid {
						continue
					}
					nudge(out)
					backoff = minBackoff
				}
				closeConn(conn)
				conn = nil
			}
			if ctx.Err() != nil {
				return
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, maxBackoff)
			if c, err := o.listen(ctx); err == nil {
				conn = c
				nudge(out)
			}
		}
	}()
	return out, nil
}
