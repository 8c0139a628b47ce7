package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/esflow/esflow/pkg/outbox"
)

// Config configures a [Relay]. Zero fields take the defaults shown.
type Config struct {
	// Shard is the part of the outbox this relay publishes. Default: all.
	Shard outbox.Shard
	// BatchSize is the most messages fetched and published at once.
	// Default 1000.
	BatchSize int
	// PollInterval is how long an idle relay waits before looking again
	// when no wake-up arrives. Default 1s with a Waker, 20ms without.
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the exponential wait after a failed
	// publish or database error. Defaults 50ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one Publish call, and how long an in-flight
	// batch may still take once Run's context is cancelled. Default 30s.
	PublishTimeout time.Duration
	// Locker, when set, makes the relay take the shard's lock before
	// publishing, so one replica is active per shard. Without it the
	// caller guarantees a single relay per shard.
	Locker outbox.Locker
	// Waker, when set, wakes the relay as soon as messages are committed.
	Waker outbox.Waker
	// Hooks observe the relay (metrics); nil fields are skipped.
	Hooks Hooks
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Hooks let metrics and tracing observe a relay without living in it.
type Hooks struct {
	// Published is called after a batch was acknowledged and deleted.
	// lag is the age of the oldest message of the batch at publish time.
	Published func(n int, took, lag time.Duration)
	// Parked is called for each message parked after a permanent failure.
	Parked func(msg outbox.Message, err error)
	// Failed is called for every failed fetch, publish or delete.
	Failed func(op string, err error)
	// Active is called with true when the relay owns its shard and starts
	// publishing, and with false when it stops.
	Active func(active bool)
}

// Relay publishes an outbox shard to a broker: fetch a batch in id order,
// publish it, wait for the acknowledgement, delete it, repeat. A message
// is deleted only after the broker acknowledged it, so a crash at any
// moment may publish a message twice but never loses one. See DESIGN.md
// for the ordering argument.
type Relay struct {
	src    outbox.Source
	pub    Publisher
	cfg    Config
	log    *slog.Logger
	active atomic.Bool
	beat   atomic.Int64 // unix nanos of the last loop iteration
}

// New returns a relay of src to pub.
func New(src outbox.Source, pub Publisher, cfg Config) (*Relay, error) {
	if src == nil || pub == nil {
		return nil, errors.New("relay: source and publisher are required")
	}
	if !cfg.Shard.Valid() {
		return nil, fmt.Errorf("relay: invalid shard %d of %d", cfg.Shard.Index, cfg.Shard.Count)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 20 * time.Millisecond
		if cfg.Waker != nil {
			cfg.PollInterval = time.Second
		}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Relay{src: src, pub: pub, cfg: cfg, log: cfg.Logger.With("shard", cfg.Shard.Index, "shards", max(cfg.Shard.Count, 1))}
	r.beat.Store(time.Now().UnixNano())
	return r, nil
}

// Active reports whether the relay currently owns its shard and publishes.
func (r *Relay) Active() bool { return r.active.Load() }

// LastBeat returns when the relay loop last made progress or checked in;
// a liveness probe compares it with the poll interval.
func (r *Relay) LastBeat() time.Time { return time.Unix(0, r.beat.Load()) }

// Run publishes until ctx is cancelled, then finishes the in-flight batch
// (within PublishTimeout) and returns nil. With a Locker it first waits
// to own the shard, and goes back to waiting if it loses it.
func (r *Relay) Run(ctx context.Context) error {
	wake, err := r.wakeups(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it started
		}
		return err
	}
	for ctx.Err() == nil {
		lost, release, err := r.lock(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.failed("lock", err)
			r.sleep(ctx, r.cfg.MaxBackoff)
			continue
		}
		r.setActive(true)
		r.log.InfoContext(ctx, "relay active")
		r.publishLoop(ctx, lost, wake)
		r.setActive(false)
		release()
		if ctx.Err() == nil {
			r.log.WarnContext(ctx, "relay lost its shard lock; waiting to reacquire")
		}
	}
	r.log.InfoContext(context.WithoutCancel(ctx), "relay stopped")
	return nil
}

func (r *Relay) setActive(v bool) {
	r.active.Store(v)
	if r.cfg.Hooks.Active != nil {
		r.cfg.Hooks.Active(v)
	}
}

func (r *Relay) lock(ctx context.Context) (<-chan struct{}, func(), error) {
	if r.cfg.Locker == nil {
		return nil, func() {}, nil
	}
	return r.cfg.Locker.Lock(ctx, r.cfg.Shard)
}

func (r *Relay) wakeups(ctx context.Context) (<-chan struct{}, error) {
	if r.cfg.Waker == nil {
		return nil, nil
	}
	ch, err := r.cfg.Waker.Wake(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: wake-ups: %w", err)
	}
	return ch, nil
}

// publishLoop runs while the shard is owned (lost stays open) and ctx lives.
func (r *Relay) publishLoop(ctx context.Context, lost <-chan struct{}, wake <-chan struct{}) {
	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		r.beat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		default:
		}
		n, err := r.step(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(backoff*2, r.cfg.MinBackoff), r.cfg.MaxBackoff)
			// Jitter keeps replicas and shards from retrying in lockstep.
			r.wait(ctx, lost, nil, timer, backoff/2+rand.N(backoff/2+1))
		case n == r.cfg.BatchSize:
			backoff = 0 // a full batch: more is probably waiting
		case n > 0:
			backoff = 0
			// A partial batch drained the shard, but writers may have
			// committed meanwhile: look once more before sleeping.
		default:
			backoff = 0
			r.wait(ctx, lost, wake, timer, r.cfg.PollInterval)
		}
	}
}

func (r *Relay) wait(ctx context.Context, lost, wake <-chan struct{}, timer *time.Timer, d time.Duration) {
	timer.Reset(d)
	select {
	case <-ctx.Done():
	case <-lost:
	case <-wake:
	case <-timer.C:
		return
	}
	if !timer.Stop() {
		select {
		case <-timer.C:
		default:
		}
	}
}

func (r *Relay) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *Relay) failed(op string, err error) {
	r.log.Warn("relay "+op+" failed", "err", err)
	if r.cfg.Hooks.Failed != nil {
		r.cfg.Hooks.Failed(op, err)
	}
}

// step publishes one batch and reports how many messages it handled.
func (r *Relay) step(ctx context.Context) (int, error) {
	msgs, err := r.src.Fetch(ctx, r.cfg.Shard, r.cfg.BatchSize)
	if err != nil {
		r.failed("fetch", err)
		return 0, err
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	// Once fetched, a batch is finished even if ctx is cancelled now:
	// shutting down mid-publish would only turn into duplicates later.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	perr := r.pub.Publish(pctx, msgs)
	took := time.Since(start)

	done := make([]int64, 0, len(msgs))
	var retry error
	if perr == nil {
		for _, m := range msgs {
			done = append(done, m.ID)
		}
	} else {
		var be *BatchError
		if !errors.As(perr, &be) || len(be.Errs) != len(msgs) {
			r.failed("publish", perr)
			return 0, perr
		}
		// A key whose earlier message failed keeps its later messages too,
		// even if they were acknowledged: they are sent again after the
		// failed one, so the key's newest copy arrives in order.
		held := map[string]bool{}
		for i, m := range msgs {
			switch err := be.Errs[i]; {
			case err == nil && held[string(m.Key)]:
			case err == nil:
				done = append(done, m.ID)
			case errors.Is(err, ErrPermanent):
				if perr := r.src.Park(pctx, m.ID, err.Error()); perr != nil {
					r.failed("park", perr)
					retry = perr
					continue
				}
				r.log.Error("relay parked a message the broker refused", "id", m.ID, "topic", m.Topic, "key", string(m.Key), "err", err)
				if r.cfg.Hooks.Parked != nil {
					r.cfg.Hooks.Parked(m, err)
				}
			default:
				held[string(m.Key)] = true
				retry = err
			}
		}
		if retry != nil {
			r.failed("publish", retry)
		}
	}
	if len(done) > 0 {
		if err := r.src.Delete(pctx, done); err != nil {
			// Published but not deleted: they will be published again.
			r.failed("delete", err)
			return 0, err
		}
		if r.cfg.Hooks.Published != nil {
			r.cfg.Hooks.Published(len(done), took, start.Sub(msgs[0].CreatedAt))
		}
	}
	return len(msgs), retry
}
