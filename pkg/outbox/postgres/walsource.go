package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// Defaults of [WALConfig].
const (
	DefaultStatusInterval = time.Second
	DefaultMaxBuffered    = 65536
	DefaultGatherGap      = 500 * time.Microsecond
	DefaultGatherMax      = 50 * time.Millisecond
)

// WALConfig configures a [WALSource]. The zero value is usable.
type WALConfig struct {
	// StatusInterval is the longest time between two reports of the
	// confirmed position to the server (they are also the stream's
	// keepalive; keep it well below wal_sender_timeout, 60 s by default).
	// Default [DefaultStatusInterval].
	StatusInterval time.Duration
	// MaxBuffered is the most decoded, unacknowledged messages held in
	// memory; when reached, the stream is not read until the relay has
	// published some (the server then keeps the WAL). Default
	// [DefaultMaxBuffered].
	MaxBuffered int
	// GatherGap and GatherMax shape batches while the slot is decoded
	// faster than it is published (a backlog): a Fetch that finds fewer
	// than its limit waits for more while messages keep arriving less
	// than GatherGap apart, for at most GatherMax. A stream that pauses
	// (caught up with the writers) ends the wait after one GatherGap.
	// Without it a relay draining a backlog published whatever had been
	// decoded since its last batch, a few hundred messages, and paid a
	// produce round trip for each such batch. Defaults
	// [DefaultGatherGap] and [DefaultGatherMax]; a negative GatherMax
	// turns it off.
	GatherGap, GatherMax time.Duration
	// Logger receives the reason a stream failed. Default slog.Default().
	Logger *slog.Logger
}

// WALSource is the relay's side of a WAL-mode outbox: it implements
// [outbox.Source], [outbox.FencedLocker] and [outbox.Waker] (and the
// relay's ExceptFetcher) over the outbox's replication slot.
//
// Lock takes the outbox's shard lease (as the table mode does, so a paused
// owner is fenced out the same way), then starts replication from the
// slot: pgoutput with messages on, over an empty publication, so only the
// logical messages arrive, each transaction's at its commit, in commit
// order. The decoded messages are held in memory; Fetch returns the
// oldest not yet deleted, Delete marks them published, and the position
// confirmed to the server (the slot's confirmed_flush_lsn) is the end of
// the last transaction all of whose messages, and all earlier ones', were
// deleted or parked. A relay that dies re-reads everything after that
// position: messages are published again, never lost. The WAL mode
// publishes the whole outbox (one slot): its shard must be the whole.
type WALSource struct {
	o   *Outbox
	cfg WALConfig

	mu sync.Mutex
	st *stream // while locked

	ids atomic.Int64 // message ids, unique across streams

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}
}

var (
	_ outbox.Source       = (*WALSource)(nil)
	_ outbox.FencedLocker = (*WALSource)(nil)
	_ outbox.Waker        = (*WALSource)(nil)
)

// ErrNotStreaming is returned by a WALSource's Fetch, Delete and Park
// while it does not hold the slot.
var ErrNotStreaming = errors.New("outbox/postgres: WAL source does not hold its slot")

// WALSource returns the relay's side of the WAL mode; the outbox must
// have been made with Config.WAL. It does no I/O until Lock.
func (o *Outbox) WALSource(cfg WALConfig) (*WALSource, error) {
	if !o.wal {
		return nil, errors.New("outbox/postgres: WALSource of an outbox not in the WAL mode (Config.WAL)")
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.GatherGap <= 0 {
		cfg.GatherGap = DefaultGatherGap
	}
	switch {
	case cfg.GatherMax == 0:
		cfg.GatherMax = DefaultGatherMax
	case cfg.GatherMax < 0:
		cfg.GatherMax = 0
	}
	return &WALSource{o: o, cfg: cfg, subs: map[chan struct{}]struct{}{}}, nil
}

// Slot returns the replication slot's name.
func (s *WALSource) Slot() string { return s.o.slot }

func (s *WALSource) stream() (*stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st == nil {
		return nil, ErrNotStreaming
	}
	return s.st, nil
}

// Fetch implements [outbox.Source]: the oldest undeleted decoded
// messages, in commit order.
func (s *WALSource) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	return s.FetchExcept(ctx, shard, limit, nil)
}

// FetchExcept is Fetch skipping the ids in except (ascending).
func (s *WALSource) FetchExcept(ctx context.Context, shard outbox.Shard, limit int, except []int64) ([]outbox.Message, error) {
	if err := walShard(shard); err != nil {
		return nil, err
	}
	st, err := s.stream()
	if err != nil {
		return nil, err
	}
	out, next := st.fetch(limit, except)
	if len(out) == 0 || len(out) >= limit || s.cfg.GatherMax <= 0 {
		return out, nil
	}
	// Everything decoded was taken: gather what arrives next (ids from
	// next on, none of them fetched or deleted yet) while it flows.
	end := time.Now().Add(s.cfg.GatherMax)
	t := time.NewTimer(s.cfg.GatherGap)
	defer t.Stop()
	for len(out) < limit {
		quiet := time.Since(time.Unix(0, st.lastMsg.Load()))
		left := time.Until(end)
		if quiet >= s.cfg.GatherGap || left <= 0 {
			break
		}
		t.Reset(min(s.cfg.GatherGap-quiet, left))
		select {
		case <-ctx.Done():
			return out, nil
		case <-st.grew:
		case <-t.C:
		}
		out, next = st.fetchFrom(out, next, limit)
	}
	return out, nil
}

// Delete implements [outbox.Source]: the messages were published; once
// all messages of a transaction and of every earlier one are, the
// transaction's end is confirmed to the server.
func (s *WALSource) Delete(_ context.Context, ids []int64) error {
	st, err := s.stream()
	if err != nil {
		return err
	}
	st.done(ids)
	return nil
}

// Park implements [outbox.Source]: the message is written to the outbox
// table as a parked row (with the reason), where the table mode keeps
// its parked messages too ([Outbox.Parked] counts them), and then counts
// as published.
func (s *WALSource) Park(ctx context.Context, id int64, reason string) error {
	st, err := s.stream()
	if err != nil {
		return err
	}
	m, ok := st.message(id)
	if !ok {
		return fmt.Errorf("outbox/postgres: park message %d: %w", id, errUnknownID)
	}
	h, err := outbox.EncodeHeaders(m.Headers)
	if err != nil {
		return fmt.Errorf("outbox/postgres: park message %d: %w", id, err)
	}
	if _, err := s.o.pool.Exec(ctx, `INSERT INTO `+eventstore.Quote(s.o.table)+` (topic, key, value, headers, key_hash, created_at, parked_at, park_reason)
VALUES ($1, $2, $3, $4, $5, $6, now(), $7)`, m.Topic, m.Key, m.Value, h, outbox.KeyHash(m.Key), m.CreatedAt, reason); err != nil {
		return fmt.Errorf("outbox/postgres: park message %d: %w", id, err)
	}
	st.done([]int64{id})
	return nil
}

var errUnknownID = errors.New("no such decoded message")

// Backlog implements [outbox.Source]: the decoded messages not yet
// published. WAL not yet decoded is not counted; [WALSource.SlotLag]
// measures it in bytes. Without the slot it is empty.
func (s *WALSource) Backlog(_ context.Context, shard outbox.Shard) (outbox.Backlog, error) {
	if err := walShard(shard); err != nil {
		return outbox.Backlog{}, err
	}
	st, err := s.stream()
	if err != nil {
		return outbox.Backlog{}, nil
	}
	return st.backlog(), nil
}

// SlotLag reports the slot's WAL, in bytes: retained is what the server
// keeps for it (from restart_lsn), unconfirmed what was written after its
// confirmed position (what a relay has yet to publish, or to confirm),
// and limit is max_slot_wal_keep_size in bytes (-1: unlimited), past
// which PostgreSQL invalidates the slot. Both count from the WAL insert
// position: asynchronous commits may still sit in the WAL buffers, where
// pg_current_wal_lsn (the write position) does not see them yet — which
// made TestWALSlotLag read 0 unconfirmed bytes after 50 appends once.
func (s *WALSource) SlotLag(ctx context.Context) (retained, unconfirmed, limit int64, err error) {
	var r, u *float64
	var mb int64
	err = s.o.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn)::float8,
    pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)::float8,
    (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
FROM pg_replication_slots WHERE slot_name = $1`, s.o.slot).Scan(&r, &u, &mb)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("outbox/postgres: slot %s: %w", s.o.slot, err)
	}
	limit = -1
	if mb >= 0 {
		limit = mb << 20
	}
	if r != nil {
		retained = int64(*r)
	}
	if u != nil {
		unconfirmed = int64(*u)
	}
	return retained, unconfirmed, limit, nil
}

func walShard(shard outbox.Shard) error {
	if !shard.Valid() || shard.Count > 1 {
		return fmt.Errorf("outbox/postgres: the WAL mode publishes the whole outbox from one slot, not shard %d/%d", shard.Index, shard.Count)
	}
	return nil
}

// Lock implements [outbox.Locker]: LockFenced without the fence.
func (s *WALSource) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	_, lost, release, err := s.LockFenced(ctx, shard)
	return lost, release, err
}

// LockFenced implements [outbox.FencedLocker]: the outbox's lease (see
// [Outbox.LockFenced]), then the slot. A walsender still streaming the
// slot belongs to an owner whose lease has expired (a paused relay whose
// session the server has not dropped yet): it is terminated, so the slot
// is free at once. lost closes when the lease or the stream fails.
func (s *WALSource) LockFenced(ctx context.Context, shard outbox.Shard) (outbox.Fence, <-chan struct{}, func(), error) {
	if err := walShard(shard); err != nil {
		return nil, nil, nil, err
	}
	fence, lost0, release0, err := s.o.LockFenced(ctx, shard)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := s.startReplication(ctx)
	if err != nil {
		release0()
		return nil, nil, nil, fmt.Errorf("outbox/postgres: slot %s: %w", s.o.slot, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	st := &stream{
		src: s, conn: conn, cancel: cancel,
		first: s.ids.Load() + 1, lost: make(chan struct{}), ended: make(chan struct{}),
		space: make(chan struct{}, 1), grew: make(chan struct{}, 1),
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	go st.run(rctx)

	lost := make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case <-lost0:
		case <-st.lost:
		case <-st.ended:
		}
		once.Do(func() { close(lost) })
	}()
	var relOnce sync.Once
	release := func() {
		relOnce.Do(func() {
			cancel()
			_ = conn.Conn().SetReadDeadline(time.Now())
			<-st.ended
			s.mu.Lock()
			if s.st == st {
				s.st = nil
			}
			s.mu.Unlock()
			cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = conn.Close(cctx)
			ccancel()
			release0()
			once.Do(func() { close(lost) })
		})
	}
	return fence, lost, release, nil
}

// slotInUse is SQLSTATE 55006, raised by START_REPLICATION while another
// walsender streams the slot.
const slotInUse = "55006"

func (s *WALSource) startReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg := s.o.pool.Config().ConnConfig.Config.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replication connection: %w", err)
	}
	args := []string{"proto_version '1'", "publication_names '" + s.o.publication + "'", "messages 'true'"}
	for attempt := 0; ; attempt++ {
		// We hold the lease: whoever streams the slot is fenced already.
		if _, err := s.o.pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
WHERE slot_name = $1 AND active_pid IS NOT NULL AND active_pid <> $2`, s.o.slot, int32(conn.PID())); err != nil {
			_ = conn.Close(ctx)
			return nil, fmt.Errorf("free the slot: %w", err)
		}
		err = pglogrepl.StartReplication(ctx, conn, s.o.slot, 0, pglogrepl.StartReplicationOptions{
			Mode: pglogrepl.LogicalReplication, PluginArgs: args,
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != slotInUse || attempt >= 50 {
			break
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = conn.Close(context.Background())
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	if err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("start replication: %w", err)
	}
	return conn, nil
}

// Wake implements [outbox.Waker]: the channel receives when a decoded
// transaction brought messages. It is closed when ctx ends.
func (s *WALSource) Wake(ctx context.Context) (<-chan struct{}, error) {
	out := make(chan struct{}, 1)
	s.subsMu.Lock()
	s.subs[out] = struct{}{}
	s.subsMu.Unlock()
	go func() {
		<-ctx.Done()
		s.subsMu.Lock()
		delete(s.subs, out)
		close(out)
		s.subsMu.Unlock()
	}()
	return out, nil
}

func (s *WALSource) wake() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		nudge(ch)
	}
}
