package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/internal/spans"
	"github.com/esflow/esflow/pkg/outbox"
)

// DefaultBatchSize is Config.BatchSize's default. A batch is what one
// fetch returns while a backlog lasts; when the relay keeps up, batches
// are as small as the commits that woke it, so the size only bounds the
// drain. Each batch costs a fetch, a delete and a produce round trip per
// broker whatever its size, and on 2 cores a drain of 100,000 rows ran at
// 113k-130k events/s with batches of 1000, 134k-156k with 2000 and
// 150k-164k with 4000 or 8000 (medians of go run ./cmd/esbench -only w2).
// kafkapub still cuts each partition's share into requests of at most
// its own BatchSize and MaxMessageBytes.
const DefaultBatchSize = 4000

// Config configures a [Relay]. Zero fields take the defaults shown.
type Config struct {
	// Shard is the part of the outbox this relay publishes. Default: all.
	Shard outbox.Shard
	// BatchSize is the most messages fetched and published at once.
	// Default [DefaultBatchSize].
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
	// TracerProvider receives a span per published batch ([SpanPublish]),
	// linked to the spans that saved its messages (their traceparent
	// headers). Default: the global provider, otel.GetTracerProvider(),
	// a no-op until the program installs an SDK.
	TracerProvider trace.TracerProvider
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
// publish it, wait for the acknowledgement, delete it, repeat, with the
// next batch fetched and the previous one deleted while a batch is being
// published. A message is deleted only after the broker acknowledged it,
// so a crash at any moment may publish a message twice but never loses
// one. See DESIGN.md for the ordering argument.
type Relay struct {
	src    outbox.Source
	pub    Publisher
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
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
		cfg.BatchSize = DefaultBatchSize
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
	r := &Relay{src: src, pub: pub, cfg: cfg, log: cfg.Logger.With("shard", cfg.Shard.Index, "shards", max(cfg.Shard.Count, 1)),
		tracer: tracerFrom(cfg.TracerProvider)}
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
		fence, lost, release, err := r.lock(ctx)
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
		r.publishLoop(ctx, fence, lost, wake)
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

// lock takes the shard. fence is nil without a Locker, or with one that
// is not an [outbox.FencedLocker].
func (r *Relay) lock(ctx context.Context) (fence outbox.Fence, lost <-chan struct{}, release func(), err error) {
	switch l := r.cfg.Locker.(type) {
	case nil:
		return nil, nil, func() {}, nil
	case outbox.FencedLocker:
		return l.LockFenced(ctx, r.cfg.Shard)
	default:
		lost, release, err = l.Lock(ctx, r.cfg.Shard)
		return nil, lost, release, err
	}
}

// fenced reports whether the lease is gone (see DESIGN.md, "Fencing").
func fenced(fence outbox.Fence) bool { return fence != nil && fence.Check() != nil }

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
//
// It is a two-stage pipeline: while batch k is being published, batch k-1
// (acknowledged by then) is deleted and, when batch k was full, batch k+1
// is fetched side by side, skipping the rows of batches k and k-1, which
// may still be in the table. Batch k+1 is
// published only after batch k was acknowledged in full, so one batch per
// partition is in flight, as before; see DESIGN.md for why the prefetch
// keeps each key's order.
//
// With a fence, the loop ends as soon as the fence fails, and every
// produce request is preceded by a fence check (the publisher gets the
// fence through its context, [WithFence]).
func (r *Relay) publishLoop(ctx context.Context, fence outbox.Fence, lost <-chan struct{}, wake <-chan struct{}) {
	backoff := time.Duration(0)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var (
		pending    acked            // acknowledged, not yet deleted
		next       []outbox.Message // batch fetched by the previous step
		prefetched bool
	)
	// Acknowledged rows are deleted before the shard is given up, even on
	// shutdown: otherwise they would only be published again.
	defer func() {
		if len(pending.ids) > 0 {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
			defer cancel()
			_ = r.delete(dctx, pending)
		}
	}()
	fail := func(err error) {
		backoff = min(max(backoff*2, r.cfg.MinBackoff), r.cfg.MaxBackoff)
		// Jitter keeps replicas and shards from retrying in lockstep.
		r.wait(ctx, lost, nil, timer, backoff/2+rand.N(backoff/2+1))
	}
	for {
		r.beat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		default:
		}
		if fenced(fence) {
			r.failed("fence", fence.Check())
			return
		}
		batch := next
		if !prefetched {
			// Nothing prefetched: settle the last batch, then fetch.
			if len(pending.ids) > 0 {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
				err := r.delete(dctx, pending)
				cancel()
				pending = acked{}
				if err != nil {
					fail(err)
					continue
				}
			}
			var err error
			if batch, err = r.fetch(ctx, nil); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.failed("fetch", err)
				fail(err)
				continue
			}
		}
		next, prefetched = nil, false
		if len(batch) == 0 {
			if len(pending.ids) > 0 {
				// Delete what was acknowledged, then look once more:
				// writers may have committed meanwhile.
				continue
			}
			backoff = 0
			r.wait(ctx, lost, wake, timer, r.cfg.PollInterval)
			continue
		}
		var err error
		next, prefetched, pending, err = r.step(ctx, fence, batch, pending)
		if err != nil {
			if errors.Is(err, outbox.ErrFenced) {
				r.failed("fence", err)
				return
			}
			if ctx.Err() != nil {
				return
			}
			fail(err)
			continue
		}
		backoff = 0
	}
}

// acked is a published batch's acknowledged part, waiting to be deleted.
type acked struct {
	ids  []int64
	took time.Duration // the Publish call
	lag  time.Duration // age of the batch's oldest message at publish time
}

// delete removes a's rows and reports them to the Published hook.
func (r *Relay) delete(ctx context.Context, a acked) error {
	if err := r.src.Delete(ctx, a.ids); err != nil {
		// Published but not deleted: they will be published again.
		r.failed("delete", err)
		return err
	}
	if r.cfg.Hooks.Published != nil {
		r.cfg.Hooks.Published(len(a.ids), a.took, a.lag)
	}
	return nil
}

// fetch returns the shard's next messages in id order, skipping except
// (ascending ids of messages still in the table but already being
// published).
func (r *Relay) fetch(ctx context.Context, except []int64) ([]outbox.Message, error) {
	limit := r.cfg.BatchSize
	if len(except) == 0 {
		return r.src.Fetch(ctx, r.cfg.Shard, limit)
	}
	if f, ok := r.src.(ExceptFetcher); ok {
		return f.FetchExcept(ctx, r.cfg.Shard, limit, except)
	}
	// The first limit+len(except) rows hold the first limit rows that are
	// not in except.
	msgs, err := r.src.Fetch(ctx, r.cfg.Shard, limit+len(except))
	if err != nil {
		return nil, err
	}
	out := msgs[:0]
	for _, m := range msgs {
		if _, skip := slices.BinarySearch(except, m.ID); !skip && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
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

// step publishes batch. Meanwhile it deletes prev, the previous batch's
// acknowledged rows, and, if batch is full, fetches the batch after it.
// It returns that batch (prefetched is false when there is none to use:
// batch was partial, the fetch failed, or some message of batch failed,
// since the prefetched batch may hold later messages of its key) and
// batch's acknowledged part, to be deleted by the next step.
func (r *Relay) step(ctx context.Context, fence outbox.Fence, batch []outbox.Message, prev acked) (next []outbox.Message, prefetched bool, done acked, err error) {
	// Once fetched, a batch is finished even if ctx is cancelled now:
	// shutting down mid-publish would only turn into duplicates later.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
	defer cancel()
	if fence != nil {
		// The fetch may have taken long enough (or the process been
		// paused) for the lease to run out: a batch fetched under it is
		// not published after it.
		if err := fence.Check(); err != nil {
			return nil, false, prev, err
		}
		pctx = WithFence(pctx, fence)
	}

	except := make([]int64, len(batch))
	for i, m := range batch {
		except[i] = m.ID
	}
	// The prefetch skips batch and prev: prev may not be deleted yet when
	// the fetch reads the table, as the two run side by side.
	skip := except
	if len(prev.ids) > 0 {
		skip = slices.Concat(prev.ids, except)
		slices.Sort(skip)
	}
	var derr, ferr error
	var wg sync.WaitGroup
	if len(prev.ids) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			derr = r.delete(pctx, prev)
		}()
	}
	// A partial batch drained the shard: nothing to prefetch. The loop
	// looks again after the delete.
	full := len(batch) == r.cfg.BatchSize
	if full {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// ctx, not pctx: a prefetch is not worth waiting for on
			// shutdown.
			next, ferr = r.fetch(ctx, skip)
		}()
	}
	start := time.Now()
	sctx, span := r.startPublish(pctx, batch)
	perr := r.pub.Publish(sctx, batch)
	spans.End(span, perr)
	took := time.Since(start)
	wg.Wait()
	if derr != nil {
		// prev stays in the table: keep batch there too, so both are
		// published again in id order.
		return nil, false, acked{}, derr
	}
	prefetched = full && ferr == nil && perr == nil
	if ferr != nil && ctx.Err() == nil {
		r.failed("fetch", ferr)
	}
	if !prefetched {
		next = nil
	}
	done = acked{took: took, lag: start.Sub(batch[0].CreatedAt)}
	done.ids, err = r.outcome(pctx, batch, except, perr)
	return next, prefetched, done, err
}

// outcome parks the messages of batch that failed for good and returns
// the ids to delete (all of ids when perr is nil), and the error to retry
// after, if any.
func (r *Relay) outcome(ctx context.Context, batch []outbox.Message, ids []int64, perr error) ([]int64, error) {
	if perr == nil {
		return ids, nil
	}
	var be *BatchError
	if !errors.As(perr, &be) || len(be.Errs) != len(batch) {
		r.failed("publish", perr)
		return nil, perr
	}
	done := ids[:0]
	var retry error
	// A key whose earlier message failed keeps its later messages too,
	// even if they were acknowledged: they are sent again after the
	// failed one, so the key's newest copy arrives in order.
	held := map[string]bool{}
	for i, m := range batch {
		switch err := be.Errs[i]; {
		case err == nil && held[string(m.Key)]:
		case err == nil:
			done = append(done, m.ID)
		case errors.Is(err, ErrPermanent):
			if perr := r.src.Park(ctx, m.ID, err.Error()); perr != nil {
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
	return done, retry
}
