package projection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
)

// Headers added to dead-lettered messages, next to the original ones.
const (
	HeaderDLQError           = "esflow-dlq-error"
	HeaderDLQProjection      = "esflow-dlq-projection"
	HeaderDLQSourceTopic     = "esflow-dlq-source-topic"
	HeaderDLQSourcePartition = "esflow-dlq-source-partition"
	HeaderDLQSourceOffset    = "esflow-dlq-source-offset"
)

// handlerError marks an error returned by the projection's handler, as
// opposed to the runner's own database work: only handler errors count
// towards MaxAttempts.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// applyResult is what one committed transaction did.
type applyResult struct {
	applied    int
	duplicates int
	gaps       []Gap
	tracked    map[string]uint64 // aggregate -> new version
	newest     time.Time
}

// applyTx applies events in one transaction: it reads the tracking of
// their aggregates, keeps the events that are next in line, hands them
// to the projection, moves tracking and records gaps.
//
// fence lists the leased partitions whose messages these are, with the
// offset to store for each (fenceFor); the transaction fails with
// ErrLeaseLost, changing nothing, when one of the leases moved on.
func (r *Runner) applyTx(ctx context.Context, events []Event, fence []offsetRow) (applyResult, error) {
	var res applyResult
	err := r.db.InTx(ctx, func(tx Tx) (err error) {
		res, err = r.applyIn(ctx, tx, events, true, fence)
		return err
	})
	return res, err
}

// warmDB opens two connections (one if Lanes is 1) and prepares on each
// the statements every apply transaction sends (the tracking read and the
// tracking and offset write), before the runner joins: the partitions a
// replica is handed arrive together, so its first batch takes them all,
// and a second one starts while the first is in flight. A replacement
// replica's first batches otherwise open their connections and prepare
// their statements while its partitions wait: on a loaded machine a few
// round trips each (DESIGN.md, "Lanes, warm-up and the assignment,
// measured", has what it changed and what it did not). The handlers' own
// statements are prepared by their first batch. Failing, it only logs: the batches open what they need anyway.
func (r *Runner) warmDB(ctx context.Context) {
	w, ok := r.db.(warmer)
	if !ok {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := w.warm(wctx, min(r.cfg.Lanes, 2), func(tx Tx) error {
		// A random aggregate and no lease: the upsert inserts a row no
		// one else locks, and the fence matches nothing, so the
		// statement fails as a fenced commit does (the transaction is
		// rolled back anyway).
		id := uuid.NewString()
		if _, err := loadVersions(wctx, tx, r.tracking, []string{id}); err != nil {
			return err
		}
		pt := tx.(*pgTx)
		fence := []offsetRow{{key: partitionKey{topic: "", partition: -1}, gen: -1}}
		if err := finishTx(wctx, tx, r.tracking, []trackingRow{{aggregateID: id, eventID: id}}, fence, true); err != nil {
			return err
		}
		if err := pt.flushAtCommit(wctx); !errors.Is(err, ErrLeaseLost) {
			return fmt.Errorf("projection: warm-up statement: want the fence's refusal, got %w", err)
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.log.Warn("warming the database connections", "error", err)
	}
}

// applyIn is applyTx's work inside a transaction the caller owns (a
// rebuild's swap applies its last events in the swap transaction). With
// last, the tracking upsert is the transaction's last statement and may
// travel with COMMIT (finishTx); its errConcurrentApply or ErrLeaseLost
// then comes from the commit.
func (r *Runner) applyIn(ctx context.Context, tx Tx, events []Event, last bool, fence []offsetRow) (applyResult, error) {
	res := applyResult{tracked: map[string]uint64{}}
	err := func() error {
		ids := make([]string, 0, len(events))
		seen := make(map[string]bool, len(events))
		for _, e := range events {
			id := e.AggregateID.String()
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		cur, err := loadVersions(ctx, tx, r.tracking, ids)
		if err != nil {
			return err
		}
		apply := make([]Event, 0, len(events))
		var track []trackingRow
		at := map[string]int{} // index in track
		for _, e := range events {
			id := e.AggregateID.String()
			v, ok := cur[id]
			switch {
			case ok && e.AggregateVersion <= v:
				res.duplicates++
			case (!ok && e.AggregateVersion == 0) || (ok && e.AggregateVersion == v+1):
				apply = append(apply, e)
				cur[id] = e.AggregateVersion
				row := trackingRow{aggregateID: id, version: e.AggregateVersion, eventID: e.EventID.String()}
				if i, ok := at[id]; ok {
					track[i] = row
				} else {
					at[id] = len(track)
					track = append(track, row)
				}
				if e.Timestamp.After(res.newest) {
					res.newest = e.Timestamp
				}
			default:
				var expected uint64
				if ok {
					expected = v + 1
				}
				res.gaps = append(res.gaps, Gap{
					AggregateID: id, ExpectedVersion: expected, SeenVersion: e.AggregateVersion,
					EventID: e.EventID.String(), Topic: e.Topic, Partition: e.Partition, Offset: e.Offset,
				})
			}
		}
		if err := r.handle(ctx, tx, apply); err != nil {
			return err
		}
		if err := recordGaps(ctx, tx, r.tracking, res.gaps); err != nil {
			return err
		}
		// Delete the gap rows this transaction resolves; rows left behind
		// (another instance's) are harmless: UnresolvedGaps ignores gaps
		// that tracking has caught up with.
		r.mu.Lock()
		open := make(map[string]uint64, len(r.openGaps))
		for id, seen := range r.openGaps {
			open[id] = seen
		}
		r.mu.Unlock()
		for _, g := range res.gaps {
			open[g.AggregateID] = g.SeenVersion
		}
		for _, t := range track {
			if seen, ok := open[t.aggregateID]; ok && t.version >= seen {
				if _, err := tx.Exec(ctx, `DELETE FROM `+GapsTable+` WHERE projection = $1 AND aggregate_id = $2 AND seen_version <= $3`,
					r.tracking, t.aggregateID, int64(t.version)); err != nil {
					return fmt.Errorf("projection: resolve gap: %w", err)
				}
			}
		}
		// Tracking and offsets move last, so that on PostgreSQL their
		// statement can go out with COMMIT: one round trip less per batch.
		if err := finishTx(ctx, tx, r.tracking, track, fence, last); err != nil {
			return err
		}
		for _, t := range track {
			res.tracked[t.aggregateID] = t.version
		}
		res.applied = len(apply)
		return nil
	}()
	return res, err
}

func (r *Runner) handle(ctx context.Context, tx Tx, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	if r.batch != nil {
		if err := r.batch.HandleBatch(ctx, tx, r.tables, events); err != nil {
			return &handlerError{err}
		}
		return nil
	}
	for _, e := range events {
		if err := r.p.Handle(ctx, tx, r.tables, e); err != nil {
			return &handlerError{fmt.Errorf("event %s (%s v%d of %s): %w", e.EventID, e.EventType, e.AggregateVersion, e.AggregateID, err)}
		}
	}
	return nil
}

// committed updates the in-memory state after a commit and reports it.
func (r *Runner) committed(ctx context.Context, res applyResult) {
	addStats(ctx, res)
	r.mu.Lock()
	for _, g := range res.gaps {
		if cur, ok := res.tracked[g.AggregateID]; !ok || cur < g.SeenVersion {
			r.openGaps[g.AggregateID] = g.SeenVersion
		}
	}
	for id, v := range res.tracked {
		if seen, ok := r.openGaps[id]; ok && v >= seen {
			delete(r.openGaps, id)
		}
	}
	r.counts.applied += uint64(res.applied)
	r.counts.duplicates += uint64(res.duplicates)
	r.counts.gaps += uint64(len(res.gaps))
	if res.newest.After(r.lastEvent) {
		r.lastEvent = res.newest
	}
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()

	if res.applied > 0 {
		r.hooks.Applied(res.applied, time.Since(res.newest))
	}
	for range res.duplicates {
		r.hooks.Duplicate()
	}
	for _, g := range res.gaps {
		r.hooks.Gap()
		r.log.Warn("gap: event held back until the missing version arrives",
			"aggregate_id", g.AggregateID, "missing_version", g.ExpectedVersion, "seen_version", g.SeenVersion,
			"event_id", g.EventID, "topic", g.Topic, "partition", g.Partition, "offset", g.Offset)
	}
}

// item is one message to apply: its event (or why it does not decode)
// and the message to dead-letter when it is poison. Items read from the
// Kafka topics carry their message; a rebuild from the event store
// builds the message the relay would have published only when needed.
type item struct {
	e     Event
	bad   error
	m     kafka.Message
	build func() (kafka.Message, error) // nil: m is the message
	lease *lease                        // the partition lease it was read under; nil outside Run
	// cluster is the id of the Kafka cluster m was fetched from ("": not
	// known), stored with the partition's offset.
	cluster string
}

// dropped reports whether the item's partition lease is gone: its
// message is the new owner's to apply.
func (it item) dropped() bool { return it.lease != nil && it.lease.dropped.Load() }

func (it item) message() (kafka.Message, error) {
	if it.build == nil {
		return it.m, nil
	}
	return it.build()
}

// processItems applies a batch: first in one transaction; when that
// fails because of a handler (or the batch holds undecodable messages),
// one message per transaction so that only the poison message is
// dead-lettered. Errors of the runner's own database work are retried
// until runCtx ends. It returns how many items (a prefix) are done.
//
// Items whose partition lease was lost count as done: they are left to
// the partition's new owner.
func (r *Runner) processItems(runCtx, ctx context.Context, items []item) (int, error) {
	clean := true
	for _, it := range items {
		if it.bad != nil {
			clean = false
		}
	}
	if clean {
		for attempt := 1; ; attempt++ {
			live := slices.DeleteFunc(slices.Clone(items), item.dropped)
			if len(live) == 0 {
				return len(items), nil
			}
			events := make([]Event, len(live))
			for i, it := range live {
				events[i] = it.e
			}
			res, err := r.applyTx(ctx, events, fenceFor(live))
			if err == nil {
				r.committed(ctx, res)
				return len(items), nil
			}
			var he *handlerError
			if errors.As(err, &he) {
				r.log.Info("batch failed in a handler; applying its messages one by one", "error", err, "messages", len(items))
				break
			}
			if errors.Is(err, ErrLeaseLost) {
				r.fenced(ctx, items)
			}
			if !r.retryInfra(runCtx, "apply", err, attempt) {
				return 0, err
			}
		}
	}
	for i, it := range items {
		if it.dropped() {
			continue
		}
		if it.bad != nil {
			if err := r.deadLetterLoop(runCtx, ctx, it, nil, it.bad); err != nil {
				return i, err
			}
			continue
		}
		if err := r.applyOne(runCtx, ctx, it); err != nil {
			return i, err
		}
	}
	return len(items), nil
}

// retryInfra reports a failure of the runner's own work and sleeps
// before the next attempt; false means runCtx ended.
func (r *Runner) retryInfra(runCtx context.Context, op string, err error, attempt int) bool {
	if (errors.Is(err, errConcurrentApply) || errors.Is(err, ErrLeaseLost)) && attempt < 3 {
		return true // re-read tracking at once
	}
	r.hooks.Failed(op, err)
	r.log.Error("retrying", "op", op, "attempt", attempt, "error", err)
	return sleep(runCtx, r.backoff(attempt))
}

// applyOne applies one message in its own transaction, dead-lettering it
// after MaxAttempts handler failures.
func (r *Runner) applyOne(runCtx, ctx context.Context, it item) error {
	e := it.e
	failures, infra := 0, 0
	for {
		if it.dropped() {
			return nil
		}
		res, err := r.applyTx(ctx, []Event{e}, fenceFor([]item{it}))
		if err == nil {
			r.committed(ctx, res)
			return nil
		}
		if errors.Is(err, ErrLeaseLost) {
			r.fenced(ctx, []item{it})
		}
		var he *handlerError
		if !errors.As(err, &he) || isBusy(err) {
			infra++
			if !r.retryInfra(runCtx, "apply", err, infra) {
				return err
			}
			continue
		}
		// A handler error may be the database going away under it: only
		// count it when the database answers.
		if perr := r.ping(ctx); perr != nil {
			infra++
			if !r.retryInfra(runCtx, "apply", perr, infra) {
				return perr
			}
			continue
		}
		failures++
		r.hooks.Failed("handle", err)
		r.log.Warn("handler failed", "event_id", e.EventID, "aggregate_id", e.AggregateID,
			"version", e.AggregateVersion, "attempt", failures, "error", err)
		if failures >= r.cfg.MaxAttempts {
			return r.deadLetterLoop(runCtx, ctx, it, &e, err)
		}
		if !sleep(runCtx, r.backoff(failures)) {
			return runCtx.Err()
		}
	}
}

// isBusy reports a SQLite "database is locked" (SQLITE_BUSY or
// SQLITE_LOCKED, extended codes included) met by a handler: lock
// contention, which a retry resolves, not a poison message. A deferred
// transaction that read before it writes gets it at once, whatever the
// busy timeout, when another connection wrote meanwhile.
func isBusy(err error) bool {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return false
	}
	c := coded.Code() & 0xff
	return c == 5 || c == 6
}

func (r *Runner) ping(ctx context.Context) error {
	return r.db.InTx(ctx, func(tx Tx) error {
		var one int
		return tx.QueryRow(ctx, `SELECT 1`).Scan(&one)
	})
}

// errNoDeadLetters means the runner has no brokers to dead-letter to
// (a rebuild from the event store without Kafka): the poison message
// stops it instead.
var errNoDeadLetters = errors.New("projection: no brokers to dead-letter to")

func (r *Runner) deadLetterLoop(runCtx, ctx context.Context, it item, e *Event, cause error) error {
	if len(r.cfg.Brokers) == 0 {
		return fmt.Errorf("%w: poison message: %w", errNoDeadLetters, cause)
	}
	m, err := it.message()
	if err != nil {
		return fmt.Errorf("projection: build dead letter: %w", err)
	}
	for attempt := 1; ; attempt++ {
		if it.dropped() {
			return nil // the new owner dead-letters it (again)
		}
		err := r.deadLetter(ctx, m, e, cause, fenceFor([]item{it}))
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrLeaseLost) {
			r.fenced(ctx, []item{it})
		}
		if !r.retryInfra(runCtx, "dead-letter", err, attempt) {
			return err
		}
	}
}

// deadLetter publishes m to the dead-letter topic and then, for a
// decodable event, moves its aggregate's tracking past it and records it
// in the dead-letters table, in one transaction. Publishing first means
// a crash in between leaves a duplicate in the topic, never a loss.
//
// For a message read through a partition lease the same transaction
// moves the partition's offset past it, fenced like an apply.
func (r *Runner) deadLetter(ctx context.Context, m kafka.Message, e *Event, cause error, fence []offsetRow) error {
	headers := make([]kafka.Header, 0, len(m.Headers)+5)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, "esflow-dlq-") {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kafka.Header{Key: HeaderDLQError, Value: []byte(truncate(cause.Error(), 4096))},
		kafka.Header{Key: HeaderDLQProjection, Value: []byte(r.tracking)},
		kafka.Header{Key: HeaderDLQSourceTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderDLQSourcePartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		kafka.Header{Key: HeaderDLQSourceOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
	)
	if err := r.dlqWriter().WriteMessages(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: headers}); err != nil {
		return fmt.Errorf("projection: write to dead-letter topic %s: %w", r.cfg.DeadLetterTopic, err)
	}
	if e == nil && len(fence) > 0 {
		if err := r.db.InTx(ctx, func(tx Tx) error { return writeFence(ctx, tx, r.tracking, fence) }); err != nil {
			return err
		}
	}
	if e != nil {
		err := r.db.InTx(ctx, func(tx Tx) error {
			row := trackingRow{aggregateID: e.AggregateID.String(), version: e.AggregateVersion, eventID: e.EventID.String()}
			if err := writeFence(ctx, tx, r.tracking, fence); err != nil {
				return err
			}
			if err := writeTracking(ctx, tx, r.tracking, []trackingRow{row}); err != nil {
				return err
			}
			return recordDeadLetter(ctx, tx, r.tracking, DeadLetter{
				EventID: row.eventID, AggregateID: row.aggregateID, Version: e.AggregateVersion,
				Error: truncate(cause.Error(), 4096), Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
			})
		})
		if errors.Is(err, errConcurrentApply) {
			err = nil // applied meanwhile by another consumer
		}
		if err != nil {
			return err
		}
		r.committed(ctx, applyResult{tracked: map[string]uint64{e.AggregateID.String(): e.AggregateVersion}})
	}
	r.mu.Lock()
	r.counts.deadLettered++
	r.mu.Unlock()
	r.hooks.DeadLettered()
	r.log.Error("message dead-lettered", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
		"dead_letter_topic", r.cfg.DeadLetterTopic, "error", cause)
	return nil
}

func (r *Runner) dlqWriter() *kafka.Writer {
	r.dlqMu.Lock()
	defer r.dlqMu.Unlock()
	if r.dlq == nil {
		r.dlq = &kafka.Writer{
			Addr:                   kafka.TCP(r.cfg.Brokers...),
			Topic:                  r.cfg.DeadLetterTopic,
			Balancer:               &kafka.Murmur2Balancer{},
			RequiredAcks:           kafka.RequireAll,
			BatchTimeout:           2 * time.Millisecond,
			AllowAutoTopicCreation: true,
			Transport:              r.cfg.Transport,
		}
	}
	return r.dlq
}

func (r *Runner) closeDLQ() {
	r.dlqMu.Lock()
	defer r.dlqMu.Unlock()
	if r.dlq != nil {
		if err := r.dlq.Close(); err != nil {
			r.log.Warn("close dead-letter writer", "error", err)
		}
		r.dlq = nil
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// fenced handles ErrLeaseLost: it re-reads the leases and marks those of
// items that moved on as dropped, so the retry leaves their messages out.
func (r *Runner) fenced(ctx context.Context, items []item) {
	r.hooks.Failed("lease", ErrLeaseLost)
	if err := r.verifyLeases(ctx, items); err != nil {
		r.log.Warn("re-read leases after a fenced transaction", "error", err)
		return
	}
	r.log.Warn("transaction fenced: a partition lease moved to another member; its messages are left to it")
}
