package projection

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// RedriveConfig configures [Runner.Redrive].
type RedriveConfig struct {
	// GroupID is the key under which the redrive stores how far it read
	// each partition of the dead-letter topic (rows of LeasesTable), so a
	// later redrive continues where this one stopped. No consumer group
	// is joined. Default the projection's tracking key plus "_redrive".
	GroupID string
	// FromBeginning reads the whole dead-letter topic whatever was stored,
	// and stores nothing.
	FromBeginning bool
	// IdleTimeout ends the redrive after this long with nothing to read.
	// Default 2s.
	IdleTimeout time.Duration
}

// RedriveResult counts what a redrive did.
type RedriveResult struct {
	Applied int // dead letters applied now
	Skipped int // already redriven, or applied meanwhile
	Failed  int // still failing (left dead) or undecodable
}

// Redrive reads the dead-letter topic and applies its messages through
// the projection again, typically after the handler was fixed. A
// dead-lettered event's aggregate has moved on (its tracking was advanced
// so later versions could apply), so an event recorded in the
// dead-letters table and not yet redriven is applied regardless of
// tracking, with Event.Redriven set, and marked redriven in the same
// transaction; anything else goes through the ordinary duplicate and gap
// checks. Running it twice, or over duplicates, changes nothing more.
// Messages that fail MaxAttempts times again stay dead (their error is
// updated) and are counted as Failed; they are not re-published.
//
// Each partition of the dead-letter topic is read with its own partition
// reader from the offset stored under cfg.GroupID; after each batch the
// offsets reached are stored. A crash in between redrives some messages
// again, which changes nothing.
func (r *Runner) Redrive(ctx context.Context, cfg RedriveConfig) (RedriveResult, error) {
	setDefault(&cfg.GroupID, r.tracking+"_redrive")
	setDefault(&cfg.IdleTimeout, 2*time.Second)
	var res RedriveResult
	if err := r.Setup(ctx); err != nil {
		return res, err
	}
	fail := func(err error) (RedriveResult, error) {
		return res, fmt.Errorf("projection %s: redrive: %w", r.tracking, err)
	}
	parts, err := r.dialer().LookupPartitions(ctx, "tcp", r.cfg.Brokers[0], r.cfg.DeadLetterTopic)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return res, nil // nothing was ever dead-lettered
	}
	if err != nil {
		return fail(fmt.Errorf("partitions of %s: %w", r.cfg.DeadLetterTopic, err))
	}
	from := map[int]int64{}
	if !cfg.FromBeginning {
		if from, err = r.redriveOffsets(ctx, cfg.GroupID); err != nil {
			return fail(err)
		}
	}
	rctx, stop := context.WithCancel(ctx)
	msgs := make(chan item, r.cfg.BatchSize)
	var wg sync.WaitGroup
	defer func() {
		// Stop the readers; what they fetched and nobody applied is no
		// longer pending.
		stop()
		wg.Wait()
		for n := len(msgs); n > 0; n-- {
			<-msgs
			r.mu.Lock()
			r.pending--
			r.mu.Unlock()
		}
	}()
	for _, p := range parts {
		l := &lease{key: partitionKey{r.cfg.DeadLetterTopic, p.ID}, start: kafka.FirstOffset}
		if o, ok := from[p.ID]; ok && o >= 0 {
			l.start = o
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.readPartition(rctx, l, msgs)
		}()
	}
	batch := make([]item, 0, r.cfg.BatchSize)
	for {
		batch = batch[:0]
		select {
		case it := <-msgs:
			batch = append(batch, it)
		case <-time.After(cfg.IdleTimeout):
			return res, nil
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		batch = r.fill(batch, msgs)
		done := 0
		for _, it := range batch {
			outcome, err := r.redriveOne(ctx, ctx, it.m)
			if err != nil {
				break
			}
			switch outcome {
			case redriveApplied:
				res.Applied++
			case redriveSkipped:
				res.Skipped++
			default:
				res.Failed++
			}
			done++
		}
		r.mu.Lock()
		r.pending -= len(batch)
		r.mu.Unlock()
		if !cfg.FromBeginning && done > 0 {
			if err := r.storeRedriveOffsets(ctx, cfg.GroupID, fenceFor(batch[:done])); err != nil {
				return fail(err)
			}
		}
		if done < len(batch) {
			return fail(ctx.Err())
		}
	}
}

// redriveOffsets reads the next offset of each dead-letter partition
// stored under key.
func (r *Runner) redriveOffsets(ctx context.Context, key string) (map[int]int64, error) {
	out := map[int]int64{}
	err := r.db.InTx(ctx, func(tx Tx) error {
		rows, err := tx.Query(ctx, `SELECT kafka_partition, next_offset FROM `+LeasesTable+` WHERE projection = $1 AND topic = $2`,
			key, r.cfg.DeadLetterTopic)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p int
			var o int64
			if err := rows.Scan(&p, &o); err != nil {
				return err
			}
			out[p] = o
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read redrive offsets: %w", err)
	}
	return out, nil
}

// storeRedriveOffsets records how far the redrive got.
func (r *Runner) storeRedriveOffsets(ctx context.Context, key string, offsets []offsetRow) error {
	err := r.db.InTx(ctx, func(tx Tx) error {
		for _, o := range offsets {
			if _, err := tx.Exec(ctx, `INSERT INTO `+LeasesTable+` (projection, topic, kafka_partition, next_offset) VALUES ($1, $2, $3, $4)
ON CONFLICT (projection, topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset`,
				key, o.key.topic, o.key.partition, o.next); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store redrive offsets: %w", err)
	}
	return nil
}

type redriveOutcome int

const (
	redriveApplied redriveOutcome = iota
	redriveSkipped
	redriveFailed
)

var errNotDead = errors.New("projection: not a pending dead letter")

func (r *Runner) redriveOne(runCtx, ctx context.Context, m kafka.Message) (redriveOutcome, error) {
	e, err := decodeMessage(m, r.cfg.Mapper)
	if err != nil {
		r.log.Warn("redrive: undecodable dead letter", "partition", m.Partition, "offset", m.Offset, "error", err)
		return redriveFailed, nil
	}
	e.Redriven = true
	for _, h := range m.Headers {
		switch h.Key {
		case HeaderDLQSourceTopic:
			e.Topic = string(h.Value)
		case HeaderDLQSourcePartition:
			if p, err := strconv.Atoi(string(h.Value)); err == nil {
				e.Partition = p
			}
		case HeaderDLQSourceOffset:
			if o, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				e.Offset = o
			}
		}
	}
	failures, infra := 0, 0
	for {
		err := r.db.InTx(ctx, func(tx Tx) error {
			n, err := tx.Exec(ctx, `UPDATE `+DeadLettersTable+` SET redriven_at = CURRENT_TIMESTAMP
WHERE projection = $1 AND event_id = $2 AND redriven_at IS NULL`, r.tracking, e.EventID.String())
			if err != nil {
				return fmt.Errorf("projection: mark dead letter redriven: %w", err)
			}
			if n == 0 {
				return errNotDead
			}
			return r.handle(ctx, tx, []Event{e})
		})
		if err == nil {
			r.committed(ctx, applyResult{applied: 1, newest: e.Timestamp})
			return redriveApplied, nil
		}
		if errors.Is(err, errNotDead) {
			e.Redriven = false
			res, err := r.applyTx(ctx, []Event{e}, nil)
			if err == nil {
				r.committed(ctx, res)
				if res.applied > 0 {
					return redriveApplied, nil
				}
				return redriveSkipped, nil
			}
			e.Redriven = true
			if errors.As(err, new(*handlerError)) {
				failures++
			} else if infra++; !r.retryInfra(runCtx, "redrive", err, infra) {
				return redriveFailed, err
			}
			if failures >= r.cfg.MaxAttempts {
				return redriveFailed, nil
			}
			continue
		}
		if !errors.As(err, new(*handlerError)) {
			infra++
			if !r.retryInfra(runCtx, "redrive", err, infra) {
				return redriveFailed, err
			}
			continue
		}
		failures++
		r.hooks.Failed("handle", err)
		if failures >= r.cfg.MaxAttempts {
			uerr := r.db.InTx(ctx, func(tx Tx) error {
				_, err := tx.Exec(ctx, `UPDATE `+DeadLettersTable+` SET error = $3 WHERE projection = $1 AND event_id = $2`,
					r.tracking, e.EventID.String(), truncate(err.Error(), 4096))
				return err
			})
			if uerr != nil {
				r.log.Warn("redrive: record error", "error", uerr)
			}
			r.log.Error("redrive: dead letter still fails", "event_id", e.EventID, "error", err)
			return redriveFailed, nil
		}
		if !sleep(runCtx, r.backoff(failures)) {
			return redriveFailed, runCtx.Err()
		}
	}
}
