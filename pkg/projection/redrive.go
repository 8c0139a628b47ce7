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
	// GroupID is the consumer group reading the dead-letter topic, so a
	// later redrive continues where this one stopped. Default the
	// projection's tracking key plus "_redrive".
	GroupID string
	// FromBeginning reads the whole dead-letter topic whatever the
	// group's offsets (it uses a throwaway group id).
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
func (r *Runner) Redrive(ctx context.Context, cfg RedriveConfig) (RedriveResult, error) {
	setDefault(&cfg.GroupID, r.tracking+"_redrive")
	setDefault(&cfg.IdleTimeout, 2*time.Second)
	if cfg.FromBeginning {
		cfg.GroupID = fmt.Sprintf("%s_%d", cfg.GroupID, time.Now().UnixNano())
	}
	if err := r.Setup(ctx); err != nil {
		return RedriveResult{}, err
	}
	var (
		mu  sync.Mutex
		res RedriveResult
	)
	process := func(runCtx, ctx context.Context, items []item) (int, error) {
		for i, it := range items {
			outcome, err := r.redriveOne(runCtx, ctx, it.m)
			if err != nil {
				return i, err
			}
			mu.Lock()
			switch outcome {
			case redriveApplied:
				res.Applied++
			case redriveSkipped:
				res.Skipped++
			default:
				res.Failed++
			}
			mu.Unlock()
		}
		return len(items), nil
	}
	reader := kafka.NewReader(r.readerConfig(cfg.GroupID, []string{r.cfg.DeadLetterTopic}))
	err := r.consume(ctx, reader, cfg.IdleTimeout, false, process)
	if cerr := reader.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("projection %s: close redrive reader: %w", r.tracking, cerr)
	}
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		return res, fmt.Errorf("projection %s: redrive: %w", r.tracking, err)
	}
	return res, nil
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
			r.committed(applyResult{applied: 1, newest: e.Timestamp})
			return redriveApplied, nil
		}
		if errors.Is(err, errNotDead) {
			e.Redriven = false
			res, err := r.applyTx(ctx, []Event{e}, nil)
			if err == nil {
				r.committed(res)
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
