package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Hooks observe a store's sequencer. Implementations must be safe for
// concurrent use and fast. Embed [NoHooks] to implement only some.
type Hooks interface {
	// Sequenced reports a committed sequencer step that numbered records
	// records of txs transactions; backlog is the number of transactions
	// the step saw but left for the next one (SequencerBatch reached).
	Sequenced(records, txs, backlog int, took time.Duration)
	// SequencerActive reports that this store's sequencer took the
	// table's sequencer lock (true) or lost it (false).
	SequencerActive(active bool)
	// Failed reports an error of operation op ("connect", "lock",
	// "sequence") that the sequencer survives and retries.
	Failed(op string, err error)
}

// NoHooks implements [Hooks] with no-ops.
type NoHooks struct{}

// Sequenced implements Hooks.
func (NoHooks) Sequenced(int, int, int, time.Duration) {}

// SequencerActive implements Hooks.
func (NoHooks) SequencerActive(bool) {}

// Failed implements Hooks.
func (NoHooks) Failed(string, error) {}

// sequencerLockClass is the high half of the sequencer's advisory lock
// key; the low half is the events table's oid, so `events` and
// `public.events` (one table) take one lock, and two tables never share
// one.
const sequencerLockClass = 0x65736571 // "eseq"

// buildLogSQL prepares the sequencer's and the readers' statements. See
// NOTIFICATIONS.md for what each guarantees.
func (s *Store) buildLogSQL() {
	n := s.names
	s.lockSQL = `SELECT pg_try_advisory_lock(($1::bigint << 32) | $2::regclass::oid::bigint)`

	// cand lists the events rows of transactions a baseline does not
	// count as done: those at or above its xmax ($xmax), and those it saw
	// running (its xip, $xip). Both are index scans on tx_id reading only
	// recent rows. The range is closed above by the current xmax although
	// no row can lie beyond it: with both bounds unknown to a generic
	// plan, PostgreSQL estimates a narrow range and keeps the index; with
	// the lower bound alone it estimated a third of the table and chose a
	// sequential scan (TestLogPlansUseIndexes). The MVCC snapshot of the
	// statement hides rows of transactions still running, so only
	// committed rows come out.
	cand := func(xmax, xip string) string {
		return `cand AS MATERIALIZED (
    SELECT e.seq, e.tx_id FROM ` + n.Table + ` e
    WHERE e.tx_id >= ` + xmax + `::text::xid8 AND e.tx_id < pg_snapshot_xmax(pg_current_snapshot())
    UNION ALL
    SELECT e.seq, e.tx_id FROM ` + n.Table + ` e
    WHERE e.tx_id = ANY (` + xip + `::text[]::xid8[])
)`
	}

	// Whether candidate c has no id yet: a scalar subquery, an index
	// probe per candidate. As NOT EXISTS, PostgreSQL planned a hash anti
	// join that read the whole notifications table on every step
	// (TestLogPlansUseIndexes).
	unnumbered := `(SELECT true FROM ` + n.Notifications + ` x WHERE x.seq = c.seq) IS NULL`

	// One sequencer step, one statement (so one snapshot and one implicit
	// transaction). $2 is the baseline the sequencer believes current,
	// $3 and $4 its xmax and xip. The state row is locked and compared
	// with $2: when another sequencer moved it, the step does nothing and
	// returns the row's baseline. Otherwise: the committed rows not yet
	// numbered, grouped by transaction; whole transactions in order of
	// their last insertion (seq) until SequencerBatch ($1) rows are
	// reached (at least one); ids continuing from the highest. Window
	// functions, not a join of the pending rows with the chosen
	// transactions, pick and order them: the generic plan PostgreSQL caches
	// after a few small steps joined the two by a nested loop, quadratic in
	// the step's rows, so a step that met a backlog of a few thousand rows
	// took long enough for the next one to meet a bigger backlog (esbench W7
	// under W1 c=32: one step ran for over 30 s). The
	// baseline moves to this statement's snapshot only when every pending
	// transaction was taken, so nothing it makes "done" is left
	// unnumbered. The primary key and the unique seq key fence the step:
	// a second sequencer whose snapshot missed this one's ids collides
	// with them and fails, nothing written.
	s.stepSQL = `WITH base AS MATERIALIZED (
    SELECT baseline::text AS baseline, baseline::text = $2::text AS current
    FROM ` + n.SequencerState + ` FOR UPDATE
), ` + cand(`$3`, `$4`) + `, pend AS MATERIALIZED (
    SELECT c.seq, c.tx_id FROM cand c
    WHERE (SELECT current FROM base) AND ` + unnumbered + `
), lasts AS (
    SELECT seq, tx_id, max(seq) OVER (PARTITION BY tx_id) AS last FROM pend
), ranked AS MATERIALIZED (
    SELECT seq, last, count(*) OVER (ORDER BY last) - count(*) OVER (PARTITION BY last) AS before FROM lasts
), chosen AS MATERIALIZED (
    SELECT seq, last FROM ranked WHERE before < $1
), ins AS (
    INSERT INTO ` + n.Notifications + ` (notification_id, seq)
    SELECT (SELECT coalesce(max(notification_id), 0) FROM ` + n.Notifications + `)
        + row_number() OVER (ORDER BY last, seq), seq
    FROM chosen
    RETURNING 1
), adv AS (
    UPDATE ` + n.SequencerState + ` SET baseline = pg_current_snapshot(), numbered_at = now()
    WHERE (SELECT count(*) FROM ranked) > 0 AND (SELECT count(*) FROM chosen) = (SELECT count(*) FROM ranked)
    RETURNING baseline::text
)
SELECT (SELECT count(*) FROM ins), (SELECT count(DISTINCT last) FROM chosen),
    (SELECT count(DISTINCT last) FROM ranked) - (SELECT count(DISTINCT last) FROM chosen),
    coalesce((SELECT baseline FROM adv), (SELECT baseline FROM base), '')`

	// Whether a committed row is still unnumbered: of any transaction
	// ($1 NULL), or only of transactions visible in the reader's first
	// snapshot $1, so commits after the request do not prolong its wait.
	// $2 and $3 are a baseline the store saw: an older baseline than the
	// current one only makes more rows candidates, which the numbered
	// check then drops. Returns the statement's snapshot and the current
	// baseline and the highest id. Read-only: readers never lock or write.
	s.pendingSQL = `WITH ` + cand(`$2`, `$3`) + `
SELECT EXISTS (
    SELECT 1 FROM cand c
    WHERE ($1::text IS NULL OR pg_visible_in_snapshot(c.tx_id, $1::text::pg_snapshot))
      AND ` + unnumbered + `
), pg_current_snapshot()::text, coalesce((SELECT baseline::text FROM ` + n.SequencerState + `), ''),
    (SELECT coalesce(max(notification_id), 0) FROM ` + n.Notifications + `)`
	s.baselineSQL = `SELECT baseline::text FROM ` + n.SequencerState

	cols := `x.notification_id, e.` + n.StreamID + `, e.` + n.Position + `, e.` + n.Topic + `, e.` + n.Data
	from := ` FROM ` + n.Notifications + ` x JOIN ` + n.Table + ` e ON e.seq = x.seq
WHERE x.notification_id >= $1`
	s.notifSQL = `SELECT ` + cols + from + `
ORDER BY x.notification_id
LIMIT $2`
	s.notifTopicsSQL = `SELECT ` + cols + from + ` AND e.` + n.Topic + ` = ANY($3::text[])
ORDER BY x.notification_id
LIMIT $2`
	s.maxNotifSQL = `SELECT coalesce(max(notification_id), 0) FROM ` + n.Notifications
}

// sequencer is a store's background numbering loop. It holds the table's
// sequencer lock on a connection of its own while active; standbys (in
// other processes, or other stores on the table) retry the lock.
type sequencer struct {
	s      *Store
	wake   chan struct{} // capacity 1: wakes coalesce
	urgent chan struct{} // a reader waits: step now, whatever the pacing
	cancel context.CancelFunc
	done   chan struct{}
	active atomic.Bool

	mu      sync.Mutex
	stepped chan struct{} // closed after each step, then replaced
}

// startSequencer starts the store's sequencer once, unless NoSequencer.
func (s *Store) startSequencer() {
	if s.cfg.NoSequencer {
		return
	}
	s.seqOnce.Do(func() {
		if s.closed.Load() {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		q := &sequencer{
			s:       s,
			wake:    make(chan struct{}, 1),
			urgent:  make(chan struct{}, 1),
			cancel:  cancel,
			done:    make(chan struct{}),
			stepped: make(chan struct{}),
		}
		s.seq.Store(q)
		go q.run(ctx)
	})
}

// Committed tells the store's sequencer that a transaction holding
// records written with [Store.AppendTx] has committed, so it numbers
// them now rather than at its next poll. It starts the sequencer if it
// is not running (unless [Config.NoSequencer]). Cheap and non-blocking.
func (s *Store) Committed() {
	s.startSequencer()
	if q := s.seq.Load(); q != nil {
		q.poke()
	}
}

// poke wakes the loop after a commit; wakes while it is busy coalesce
// into one step, and steps are paced by SequencerDelay.
func (q *sequencer) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// hurry wakes the loop for a waiting reader: the next step starts at once.
func (q *sequencer) hurry() {
	select {
	case q.urgent <- struct{}{}:
	default:
	}
}

// steps returns a channel closed when the step running now (or, if none
// runs, the next one) ends; waiters check again after it, since that
// step may have begun before their commit.
func (q *sequencer) steps() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stepped
}

func (q *sequencer) stepEnded() {
	q.mu.Lock()
	close(q.stepped)
	q.stepped = make(chan struct{})
	q.mu.Unlock()
}

func (q *sequencer) stop() {
	q.cancel()
	<-q.done
}

func (q *sequencer) run(ctx context.Context) {
	defer close(q.done)
	cfg := q.s.cfg
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			// Closing the session releases the lock.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
		if q.active.Swap(false) {
			cfg.Hooks.SequencerActive(false)
		}
	}()
	drop := func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx)
			cancel()
			conn = nil
		}
		if q.active.Swap(false) {
			cfg.Hooks.SequencerActive(false)
		}
	}
	retry := newBackoff(10*time.Millisecond, time.Second)
	var base *snapshot
	// failed reports err, ends the session (releasing the lock, so that a
	// standby that can number takes over from one that cannot: a
	// read-only role, say), forgets the baseline and backs off.
	failed := func(op string, err error) {
		cfg.Hooks.Failed(op, err)
		drop()
		base = nil
		retry.wait(ctx)
	}
	for ctx.Err() == nil {
		if conn == nil {
			c, err := pgx.ConnectConfig(ctx, q.s.pool.Config().ConnConfig.Copy())
			if err != nil {
				cfg.Hooks.Failed("connect", err)
				retry.wait(ctx)
				continue
			}
			conn = c
		}
		if !q.active.Load() {
			var ok bool
			err := conn.QueryRow(ctx, q.s.lockSQL, int64(sequencerLockClass), q.s.names.Table).Scan(&ok)
			if err != nil {
				failed("lock", err)
				continue
			}
			if !ok {
				sleep(ctx, cfg.SequencerTakeover)
				continue
			}
			q.active.Store(true)
			cfg.Hooks.SequencerActive(true)
		}
		if base == nil {
			b, err := readBaseline(ctx, conn, q.s.baselineSQL)
			if err != nil {
				failed("sequence", err)
				continue
			}
			base = b
		}
		start := time.Now()
		var records, txs, backlog int64
		var next string
		err := conn.QueryRow(ctx, q.s.stepSQL, int64(cfg.SequencerBatch), base.text, base.xmax, base.xip).
			Scan(&records, &txs, &backlog, &next)
		changed := err == nil && next != base.text
		if changed {
			base, err = parseSnapshot(next)
			if err == nil {
				q.s.baseline.Store(base)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failed("sequence", fmt.Errorf("sequencer step: %w", err))
			continue
		}
		retry.reset()
		q.stepEnded()
		if records > 0 {
			cfg.Hooks.Sequenced(int(records), int(txs), int(backlog), time.Since(start))
		}
		if backlog > 0 || changed && records == 0 {
			continue // more to number, or another sequencer moved the baseline
		}
		q.pause(ctx, start)
	}
}

// pause waits for the next step: until a commit wakes it (but not before
// SequencerDelay after the last step began, so that a stream of commits
// shares steps, and with them the steps' WAL flushes), until a reader
// hurries it, or for SequencerPoll.
func (q *sequencer) pause(ctx context.Context, lastStep time.Time) {
	cfg := q.s.cfg
	poll := time.NewTimer(cfg.SequencerPoll)
	defer poll.Stop()
	select {
	case <-ctx.Done():
		return
	case <-q.urgent:
		return
	case <-poll.C:
		return
	case <-q.wake:
	}
	wait := time.Until(lastStep.Add(cfg.SequencerDelay))
	if wait <= 0 {
		return
	}
	paced := time.NewTimer(wait)
	defer paced.Stop()
	select {
	case <-ctx.Done():
	case <-q.urgent:
	case <-paced.C:
	}
}

// backoff doubles a wait from min to max; reset starts over.
type backoff struct{ min, max, next time.Duration }

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, next: min} }

func (b *backoff) reset() { b.next = b.min }

func (b *backoff) wait(ctx context.Context) {
	sleep(ctx, b.next)
	b.next = min(2*b.next, b.max)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// snapshot is a pg_snapshot in its text form "xmin:xmax:xip,…", with
// xmax and the running ids split out to be passed as parameters.
type snapshot struct {
	text string
	xmax string
	xip  []string
}

func parseSnapshot(text string) (*snapshot, error) {
	parts := strings.Split(text, ":")
	if len(parts) != 3 || parts[1] == "" {
		return nil, fmt.Errorf("sequencer: malformed baseline snapshot %q", text)
	}
	b := &snapshot{text: text, xmax: parts[1], xip: []string{}}
	if parts[2] != "" {
		b.xip = strings.Split(parts[2], ",")
	}
	return b, nil
}

// readBaseline reads the sequencer's baseline from its state row.
func readBaseline(ctx context.Context, q querier, sql string) (*snapshot, error) {
	var text string
	if err := q.QueryRow(ctx, sql).Scan(&text); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, errors.New("sequencer: no baseline row (run Migrate)")
		}
		return nil, fmt.Errorf("sequencer: read baseline: %w", err)
	}
	return parseSnapshot(text)
}

// JoinHooks returns hooks that call each of hs in turn (nil ones are left
// out): for example metrics and logs.
func JoinHooks(hs ...Hooks) Hooks {
	var out joinedHooks
	for _, h := range hs {
		if h != nil {
			out = append(out, h)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return out
}

type joinedHooks []Hooks

func (j joinedHooks) Sequenced(records, txs, backlog int, took time.Duration) {
	for _, h := range j {
		h.Sequenced(records, txs, backlog, took)
	}
}

func (j joinedHooks) SequencerActive(active bool) {
	for _, h := range j {
		h.SequencerActive(active)
	}
}

func (j joinedHooks) Failed(op string, err error) {
	for _, h := range j {
		h.Failed(op, err)
	}
}
