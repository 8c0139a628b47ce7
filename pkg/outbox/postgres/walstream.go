package postgres

// The replication session behind a locked WALSource: one goroutine reads
// and decodes the stream and reports the confirmed position; the relay's
// calls fetch and delete the decoded messages under its mutex.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/esflow/esflow/pkg/outbox"
)

// stream is one replication session: its reader goroutine decodes into
// entries; the relay fetches and deletes them.
type stream struct {
	src    *WALSource
	conn   *pgconn.PgConn // owned by run
	cancel context.CancelFunc
	lost   chan struct{} // closed by run on a stream failure
	ended  chan struct{} // closed when run returned
	space  chan struct{} // nudged by done when entries were freed
	grew   chan struct{} // nudged by decode when a message was added

	lastMsg atomic.Int64 // unix nanos of the last decoded message

	mu        sync.Mutex
	entries   []entry // ids first, first+1, …
	first     int64
	txns      []*txn // committed, not yet confirmed, in commit order
	open      *txn   // between Begin and Commit
	confirmed pglogrepl.LSN
	arena     arena
	scratch   []outbox.Message // decode's
}

type entry struct {
	msg  outbox.Message
	txn  *txn
	done bool
}

// txn is a decoded transaction; it is in stream.txns once committed.
type txn struct {
	end       pglogrepl.LSN
	commit    time.Time
	remaining int // messages not yet deleted or parked
}

// fetch returns up to limit undeleted messages not in except, and the id
// after the last entry it looked at.
func (st *stream) fetch(limit int, except []int64) ([]outbox.Message, int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]outbox.Message, 0, min(limit, len(st.entries)))
	for i := range st.entries {
		e := &st.entries[i]
		if e.done {
			continue
		}
		if _, skip := slices.BinarySearch(except, e.msg.ID); skip {
			continue
		}
		out = append(out, e.msg)
		if len(out) == limit {
			return out, e.msg.ID + 1
		}
	}
	return out, st.first + int64(len(st.entries))
}

// fetchFrom appends the undeleted messages from id next on to out, up
// to limit in all.
func (st *stream) fetchFrom(out []outbox.Message, next int64, limit int) ([]outbox.Message, int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := max(next-st.first, 0); i < int64(len(st.entries)) && len(out) < limit; i++ {
		if e := &st.entries[i]; !e.done {
			out = append(out, e.msg)
		}
		next = st.first + i + 1
	}
	return out, max(next, st.first)
}

func (st *stream) message(id int64) (outbox.Message, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	i := id - st.first
	if i < 0 || i >= int64(len(st.entries)) || st.entries[i].done {
		return outbox.Message{}, false
	}
	return st.entries[i].msg, true
}

// done marks ids published and advances the confirmed position.
func (st *stream) done(ids []int64) {
	st.mu.Lock()
	for _, id := range ids {
		i := id - st.first
		if i < 0 || i >= int64(len(st.entries)) || st.entries[i].done {
			continue // an earlier stream's, or twice
		}
		e := &st.entries[i]
		e.done = true
		e.txn.remaining--
	}
	n := 0
	for n < len(st.entries) && st.entries[n].done {
		n++
	}
	if n > 0 {
		clear(st.entries[:n])
		st.entries = st.entries[n:]
		st.first += int64(n)
	}
	st.advance()
	st.mu.Unlock()
	nudge(st.space)
}

// advance confirms the transactions at the head that are finished. Called
// with mu held.
func (st *stream) advance() {
	for len(st.txns) > 0 && st.txns[0].remaining == 0 {
		st.confirmed = max(st.confirmed, st.txns[0].end)
		st.txns[0] = nil
		st.txns = st.txns[1:]
	}
}

func (st *stream) backlog() outbox.Backlog {
	st.mu.Lock()
	defer st.mu.Unlock()
	var b outbox.Backlog
	for i := range st.entries {
		if !st.entries[i].done {
			if b.Messages == 0 {
				b.Oldest = st.entries[i].msg.CreatedAt
			}
			b.Messages++
		}
	}
	return b
}

func (st *stream) full() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.entries) >= st.src.cfg.MaxBuffered
}

// run reads the stream until ctx ends (release) or it fails (lost).
func (st *stream) run(ctx context.Context) {
	defer close(st.ended)
	interval := st.src.cfg.StatusInterval
	var sent pglogrepl.LSN
	status := func() error {
		st.mu.Lock()
		pos := st.confirmed
		st.mu.Unlock()
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, st.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
			return err
		}
		sent = pos
		return nil
	}
	fail := func(err error) {
		if ctx.Err() == nil {
			st.src.cfg.Logger.Warn("outbox/postgres: replication stream failed", "slot", st.src.o.slot, "err", err)
			close(st.lost)
		}
	}
	defer func() {
		// Confirm what was published before the session ends: otherwise
		// it would only be published again.
		if ctx.Err() != nil {
			st.mu.Lock()
			pos := st.confirmed
			st.mu.Unlock()
			if pos > sent {
				_ = pglogrepl.SendStandbyStatusUpdate(context.Background(), st.conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos})
			}
		}
	}()
	// Receives run without a context (pgconn would watch one per call,
	// for every message) against a read deadline at the next status
	// report; release interrupts a receive by moving the deadline to now.
	var next time.Time
	deadline := func() {
		next = time.Now().Add(interval)
		_ = st.conn.Conn().SetReadDeadline(next)
	}
	deadline()
	for ctx.Err() == nil {
		if time.Now().After(next) {
			if err := status(); err != nil {
				fail(err)
				return
			}
			deadline()
			if ctx.Err() != nil {
				return
			}
		}
		if st.full() {
			// Let the relay catch up; the status updates keep the
			// session alive meanwhile.
			t := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
			case <-st.space:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		msg, err := st.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if pgconn.Timeout(err) {
				next = time.Now() // send a status now
				continue
			}
			fail(err)
			return
		}
		reply, err := st.handle(msg)
		if err != nil {
			fail(err)
			return
		}
		st.mu.Lock()
		advanced := st.confirmed > sent
		st.mu.Unlock()
		if reply || advanced && time.Until(next) < interval-interval/10 {
			// Asked for, or something to confirm and the last report is
			// a tenth of an interval old: report now.
			next = time.Now()
		}
	}
}

// handle decodes one message of the stream. reply reports a keepalive
// that asks for an answer.
func (st *stream) handle(msg pgproto3.BackendMessage) (reply bool, err error) {
	switch m := msg.(type) {
	case *pgproto3.ErrorResponse:
		return false, pgconn.ErrorResponseToPgError(m)
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return false, nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return false, err
			}
			st.mu.Lock()
			// Everything the server decoded before WALEnd arrived before
			// this keepalive: with nothing open or unpublished, all of it
			// is done.
			if len(st.txns) == 0 && st.open == nil {
				st.confirmed = max(st.confirmed, k.ServerWALEnd)
			}
			st.mu.Unlock()
			return k.ReplyRequested, nil
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return false, err
			}
			return false, st.decode(x.WALData)
		}
	}
	return false, nil
}

func (st *stream) decode(data []byte) error {
	lm, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("decode pgoutput: %w", err)
	}
	switch v := lm.(type) {
	case *pglogrepl.BeginMessage:
		st.mu.Lock()
		st.open = &txn{commit: v.CommitTime}
		st.mu.Unlock()
	case *pglogrepl.LogicalDecodingMessage:
		if !v.Transactional || v.Prefix != st.src.o.prefix {
			return nil
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.open == nil {
			return errors.New("logical message outside a transaction")
		}
		// Content aliases the connection's read buffer: copy it.
		var err error
		if st.scratch, err = decodeWAL(st.scratch[:0], st.arena.copy(v.Content), &st.arena); err != nil {
			return fmt.Errorf("message at %s: %w", v.LSN, err)
		}
		for _, m := range st.scratch {
			m.ID = st.src.ids.Add(1)
			m.CreatedAt = st.open.commit
			if want := st.first + int64(len(st.entries)); m.ID != want {
				return fmt.Errorf("message id %d, want %d", m.ID, want)
			}
			st.entries = append(st.entries, entry{msg: m, txn: st.open})
			st.open.remaining++
		}
		clear(st.scratch)
		st.lastMsg.Store(time.Now().UnixNano())
		nudge(st.grew)
	case *pglogrepl.CommitMessage:
		st.mu.Lock()
		t := st.open
		st.open = nil
		if t == nil {
			st.mu.Unlock()
			return errors.New("commit without begin")
		}
		t.end = v.TransactionEndLSN
		st.txns = append(st.txns, t)
		st.advance()
		brought := len(st.entries) > 0
		st.mu.Unlock()
		if brought {
			st.src.wake()
		}
	}
	return nil
}
