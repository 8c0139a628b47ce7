package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/esflow/esflow/pkg/eventstore"
)

// RunnerConfig configures a [Runner]. Zero fields take the defaults
// documented on them.
type RunnerConfig struct {
	// Brokers to bootstrap from. Required.
	Brokers []string
	// GroupID is the consumer group whose committed offsets a partition
	// starts from the first time it is leased (upgrading from the
	// consumer-group runner). The runner joins no group. Default the
	// projection's name plus TableSuffix.
	GroupID string
	// Dialer opens the reader's connections (TLS, SASL, client id).
	// Default kafka-go's default dialer.
	Dialer *kafka.Dialer
	// Transport is the dead-letter writer's transport. Default a fresh
	// transport with Dialer's TLS, SASL mechanism and client id.
	Transport kafka.RoundTripper
	// BatchSize caps the messages applied in one transaction. Default 500.
	BatchSize int
	// Lanes is how many batches may be applied at once, each in its own
	// transaction over partitions none of the others holds, so each
	// partition is still applied in order. A batch then waits only for a
	// batch in flight holding messages of its partitions: a slow batch
	// delays its own partitions, not all of them, and a replica that took
	// over another's partitions applies them beside its own. A quiet
	// runner still applies one batch at a time; a second starts only when
	// messages of other partitions arrive while one is in flight. Handlers
	// of different partitions may run concurrently: rows they share (a
	// counter per type, say) are serialised by the database's row locks
	// (update shared rows in a fixed order, as the multi-row upserts of a
	// sorted batch do), and a deadlock is retried like any failure of the
	// runner's own work. Each batch in flight holds a pool connection:
	// size the pool for Lanes per runner plus the readers.
	//
	// Default 1: one batch at a time, which makes the fewest and largest
	// transactions. More lanes pay where a round trip to the database is
	// long and CPU is spare (a remote database, a catch-up after an
	// outage); on a machine whose CPU the whole pipeline shares they make
	// more, smaller transactions, and in the runs of DESIGN.md ("Lanes,
	// warm-up and the assignment, measured") 4 lanes made failover
	// slower, not faster. On
	// SQLite, where one connection writes at a time, keep 1.
	Lanes int
	// BatchWait is how long a partial batch waits for more messages
	// before it is applied. Default 0: a batch is what has arrived when
	// the previous one committed, since messages keep arriving (read
	// ahead) while a batch is applied — under load batches fill up on
	// their own, and a lone event is not held back. It must not be
	// negative.
	BatchWait time.Duration
	// MaxAttempts is how many times a message's handler may fail before
	// the message is dead-lettered. Default 5.
	MaxAttempts int
	// RetryBackoff is the first delay between attempts; it doubles up to
	// 5s. Default 50ms.
	RetryBackoff time.Duration
	// DeadLetterTopic receives poison messages. Default the projection's
	// name plus ".dlq".
	DeadLetterTopic string
	// TableSuffix is appended to every table name of the projection and
	// to its tracking key, so a rebuild can fill fresh shadow tables
	// (for example "_v2") next to the live ones. Default none.
	TableSuffix string
	// Mapper, when set, decrypts envelopes published encrypted
	// (outbox.ContentTypeEncrypted); without it they are dead-lettered.
	Mapper *eventstore.Mapper
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Hooks observe the runner. Default none.
	Hooks Hooks
	// IdleAfter is how long without a fetched message counts as caught
	// up for Ready. Default 1s.
	IdleAfter time.Duration
	// ShutdownTimeout bounds how long the batch in progress may take to
	// finish after Run's context is cancelled. Default 10s.
	ShutdownTimeout time.Duration
	// Partition ownership (DESIGN.md, "Partition leases"). The runners of
	// a projection share its partitions through lease rows in the read
	// model's database; no consumer group is involved.

	// LeaseTTL is how long a member may go without a heartbeat before the
	// others take its partitions: what a paused (SIGSTOP) or cut-off
	// runner costs. On PostgreSQL a killed runner is seen dead at once
	// (its session's advisory lock goes with the process), so LeaseTTL
	// does not bound crash failover there. Default 2s.
	LeaseTTL time.Duration
	// LeaseCheck is how often the runner reads the leases and members,
	// acquires what is free and assigned to it, and hands over what is
	// assigned to another: it bounds failover after a crash. On
	// PostgreSQL a release or a join also wakes the other members at once
	// (LISTEN/NOTIFY), so hand-overs do not wait for it. Default 100ms.
	LeaseCheck time.Duration
	// HeartbeatInterval is how often the runner renews its membership;
	// it must be shorter than LeaseTTL. Default LeaseTTL/4.
	HeartbeatInterval time.Duration
	// JoinDelay is how long a starting runner waits before it joins when
	// other members are alive (they keep applying every partition
	// meanwhile); a runner that finds no live member joins at once.
	// Joined, it is handed its share at once. The delay lets a new process
	// finish starting before partitions depend on it: on a machine without
	// spare CPU a replacement's first batches otherwise wait for its own
	// start (DESIGN.md, "Joining after a delay"). Default 0: join at once.
	JoinDelay time.Duration
	// DiscoverInterval is how often the topics' partitions are listed
	// again (new partitions, topics created later; every 2s while a topic
	// is missing). Default 10s.
	DiscoverInterval time.Duration
	// MemberName is recorded with the runner's membership, for operators
	// (MembersTable). Default the host name.
	MemberName string
	// TracerProvider receives a span per applied batch ([SpanApply]),
	// linked to the spans that saved its events (the messages'
	// traceparent headers). Handlers get the span in their context.
	// Default: the global provider, otel.GetTracerProvider(), a no-op
	// until the program installs an SDK.
	TracerProvider trace.TracerProvider
}

// Runner consumes a projection's topics and applies them to its read
// model. See the package documentation and DESIGN.md.
type Runner struct {
	db       DB
	p        Projection
	batch    BatchHandler // nil unless p implements it
	cfg      RunnerConfig
	tables   Tables
	tracking string // tracking key: p.Name() + TableSuffix
	log      *slog.Logger
	hooks    Hooks
	tracer   trace.Tracer

	running atomic.Bool
	fetch   *fetcher // the partition readers' client
	dlqMu   sync.Mutex
	dlq     *kafka.Writer

	mu        sync.Mutex
	started   time.Time
	lastFetch time.Time
	pending   int // fetched, not yet applied
	// readerTrouble is when a partition reader last failed to fetch,
	// zero once one fetched again; leaseFailing is set while the lease
	// checks fail: not ready then.
	readerTrouble time.Time
	leaseFailing  bool
	partitions    map[partitionKey]*PartitionLag
	lastEvent     time.Time
	openGaps      map[string]uint64 // aggregate id -> seen version
	counts        counts
	notify        chan struct{} // closed and replaced after every commit
	// leasesChecked is set once the runner has read the leases as a
	// member; owned counts the partitions it holds.
	leasesChecked bool
	owned         int
	// flights are the batches being applied (at most Lanes).
	flights map[*flight]bool
}

// flight is a batch being applied: the leases of its messages, and a
// channel closed when it is done.
type flight struct {
	leases map[*lease]bool
	done   chan struct{}
}

// batchesDone returns the channels closed when the batches in flight
// that hold messages of any of ls are done; none if no batch does.
func (r *Runner) batchesDone(ls []*lease) []<-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []<-chan struct{}
	for f := range r.flights {
		for _, l := range ls {
			if f.leases[l] {
				out = append(out, f.done)
				break
			}
		}
	}
	return out
}

type counts struct{ applied, duplicates, gaps, deadLettered uint64 }

type partitionKey struct {
	topic     string
	partition int
}

// NewRunner validates the projection and configuration and returns a
// runner; it does no I/O.
func NewRunner(db DB, p Projection, cfg RunnerConfig) (*Runner, error) {
	return newRunner(db, p, cfg, true)
}

// newRunner is NewRunner; needBrokers false admits a runner without
// Kafka (a rebuild from the event store, which then cannot dead-letter).
func newRunner(db DB, p Projection, cfg RunnerConfig, needBrokers bool) (*Runner, error) {
	if db == nil || p == nil {
		return nil, errors.New("projection: NewRunner needs a DB and a Projection")
	}
	name := p.Name()
	if !ValidIdentifier(name) || !ValidIdentifier(name+cfg.TableSuffix) {
		return nil, fmt.Errorf("projection: invalid projection name %q (suffix %q): want letters, digits and underscores", name, cfg.TableSuffix)
	}
	if needBrokers && len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("projection %s: no brokers configured", name)
	}
	if len(p.Topics()) == 0 {
		return nil, fmt.Errorf("projection %s: no topics", name)
	}
	tables, err := NewTables(p.Tables(), cfg.TableSuffix)
	if err != nil {
		return nil, fmt.Errorf("projection %s: %w", name, err)
	}
	if cfg.BatchSize < 0 || cfg.MaxAttempts < 0 || cfg.BatchWait < 0 || cfg.Lanes < 0 {
		return nil, fmt.Errorf("projection %s: negative BatchSize, BatchWait, MaxAttempts or Lanes", name)
	}
	setDefault(&cfg.Lanes, 1)
	setDefault(&cfg.GroupID, name+cfg.TableSuffix)
	setDefault(&cfg.DeadLetterTopic, name+".dlq")
	setDefault(&cfg.BatchSize, 500)
	setDefault(&cfg.MaxAttempts, 5)
	setDefault(&cfg.RetryBackoff, 50*time.Millisecond)
	setDefault(&cfg.IdleAfter, time.Second)
	setDefault(&cfg.ShutdownTimeout, 10*time.Second)
	setDefault(&cfg.LeaseTTL, 2*time.Second)
	setDefault(&cfg.LeaseCheck, 100*time.Millisecond)
	setDefault(&cfg.HeartbeatInterval, cfg.LeaseTTL/4)
	setDefault(&cfg.DiscoverInterval, 10*time.Second)
	if cfg.MemberName == "" {
		cfg.MemberName, _ = os.Hostname()
	}
	if cfg.LeaseTTL < 0 || cfg.LeaseCheck < 0 || cfg.HeartbeatInterval < 0 || cfg.DiscoverInterval < 0 {
		return nil, fmt.Errorf("projection %s: negative LeaseTTL, LeaseCheck, HeartbeatInterval or DiscoverInterval", name)
	}
	if cfg.HeartbeatInterval >= cfg.LeaseTTL {
		return nil, fmt.Errorf("projection %s: HeartbeatInterval %s must be shorter than LeaseTTL %s", name, cfg.HeartbeatInterval, cfg.LeaseTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Hooks == nil {
		cfg.Hooks = NoHooks{}
	}
	if cfg.Transport == nil {
		t := &kafka.Transport{}
		if d := cfg.Dialer; d != nil {
			t.TLS, t.SASL, t.ClientID = d.TLS, d.SASLMechanism, d.ClientID
		}
		cfg.Transport = t
	}
	r := &Runner{
		db: db, p: p, cfg: cfg, tables: tables, tracking: name + cfg.TableSuffix,
		fetch:      newFetcher(cfg.Brokers, cfg.Dialer),
		log:        cfg.Logger.With("projection", name+cfg.TableSuffix),
		hooks:      cfg.Hooks,
		tracer:     tracerFrom(cfg.TracerProvider),
		partitions: map[partitionKey]*PartitionLag{},
		openGaps:   map[string]uint64{},
		notify:     make(chan struct{}),
		flights:    map[*flight]bool{},
	}
	r.batch, _ = p.(BatchHandler)
	return r, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Setup creates the bookkeeping tables and the projection's tables. Run
// calls it; calling it earlier is harmless.
func (r *Runner) Setup(ctx context.Context) error {
	return setupSchema(ctx, r.db, r.p, r.tables)
}

// Tables returns the table mapping the runner hands to the projection.
func (r *Runner) Tables() Tables { return r.tables }

// Run consumes until ctx is cancelled or applying fails for good. It
// joins the projection's members, applies the partitions leased to it
// and hands partitions over as members come and go (DESIGN.md,
// "Partition leases"). On cancellation it releases its leases at once
// (the other members take them over when notified, or at their next
// LeaseCheck), finishes the batch in progress, whose partitions the
// next owners resume after if it commits first, and returns nil.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("projection: runner is already running")
	}
	defer r.running.Store(false)
	if err := r.Setup(ctx); err != nil {
		return err
	}
	gaps, err := unresolvedGaps(ctx, r.db, r.tracking)
	if err != nil {
		return err
	}
	r.mu.Lock()
	for _, g := range gaps {
		r.openGaps[g.AggregateID] = g.SeenVersion
	}
	r.started = time.Now()
	r.mu.Unlock()

	gctx, stopGaps := context.WithCancel(ctx)
	defer stopGaps()
	go r.refreshGaps(gctx)

	r.fetch.warm(ctx, r.p.Topics())
	defer r.fetch.close()
	r.warmDB(ctx)
	msgs := make(chan item, r.cfg.BatchSize)
	o := &owner{r: r, out: msgs, held: map[partitionKey]*lease{}}
	mctx, stopManage := context.WithCancel(ctx)
	managed := make(chan struct{})
	go func() {
		defer close(managed)
		o.manage(mctx)
	}()
	err = r.applyLoop(ctx, msgs)
	stopManage()
	<-managed // the leases are released
	o.finish()
	r.mu.Lock()
	r.leasesChecked, r.owned = false, 0
	r.pending = 0 // what the stopped readers fetched is nobody's now
	clear(r.partitions)
	r.mu.Unlock()
	r.closeDLQ()
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// applyLoop applies what the partition readers deliver until ctx ends
// or applying fails for good; then it waits for the batches in flight.
//
// A batch is what has arrived (up to BatchSize, after BatchWait when
// set), and up to Lanes batches are applied at once, each in its own
// transaction, over partitions none of the others holds: a partition's
// messages wait only for a batch holding messages of the same partition,
// so each partition is applied in order, and a slow batch delays only
// its own partitions. On a quiet runner one batch at a time takes
// everything (few, large transactions); a second starts only when
// messages of other partitions arrive while one is in flight. Messages
// of a lease that was lost or handed over are skipped.
func (r *Runner) applyLoop(ctx context.Context, msgs <-chan item) error {
	type result struct {
		f     *flight
		parts []partitionKey
		err   error
	}
	var (
		q        = map[partitionKey][]item{} // arrived, not yet in a batch
		order    []partitionKey              // partitions with queued items, oldest first
		queued   int
		busy     = map[partitionKey]bool{} // in a batch in flight
		inFlight int
		results  = make(chan result, r.cfg.Lanes)
		failed   error
		stopping = ctx.Done()
	)
	limit := r.cfg.Lanes * r.cfg.BatchSize // queued beyond it, the readers wait
	enqueue := func(it item) {
		k := partitionKey{it.m.Topic, it.m.Partition}
		if len(q[k]) == 0 {
			order = append(order, k)
		}
		q[k] = append(q[k], it)
		queued++
	}
	// drain takes what else has arrived; with BatchWait it waits that
	// long for more while no batch could be filled.
	drain := func() {
		var wait <-chan time.Time
		for queued < limit {
			select {
			case it := <-msgs:
				enqueue(it)
				continue
			default:
			}
			if r.cfg.BatchWait == 0 || queued >= r.cfg.BatchSize {
				return
			}
			if wait == nil {
				t := time.NewTimer(r.cfg.BatchWait)
				defer t.Stop()
				wait = t.C
			}
			select {
			case it := <-msgs:
				enqueue(it)
			case <-wait:
				return
			case <-ctx.Done():
				return
			}
		}
	}
	// take forms a batch of the queued items of partitions no batch in
	// flight holds, oldest partition first.
	take := func() ([]item, []partitionKey) {
		var batch []item
		var parts []partitionKey
		skipped := 0
		rest := order[:0]
		for _, k := range order {
			items := q[k]
			if busy[k] || len(batch) >= r.cfg.BatchSize {
				rest = append(rest, k)
				continue
			}
			n := min(len(items), r.cfg.BatchSize-len(batch))
			took := false
			for _, it := range items[:n] {
				if it.dropped() {
					skipped++
					continue
				}
				batch = append(batch, it)
				took = true
			}
			queued -= n
			if took {
				parts = append(parts, k)
			}
			if n < len(items) {
				q[k] = items[n:]
				rest = append(rest, k)
			} else {
				delete(q, k)
			}
		}
		order = rest
		if skipped > 0 {
			r.mu.Lock()
			r.pending -= skipped
			r.mu.Unlock()
		}
		return batch, parts
	}
	for {
		for failed == nil && stopping != nil && inFlight < r.cfg.Lanes {
			batch, parts := take()
			if len(batch) == 0 {
				break
			}
			for _, k := range parts {
				busy[k] = true
			}
			inFlight++
			f := r.fly(batch)
			go func() {
				err := r.runBatch(ctx, batch, r.processItems)
				results <- result{f, parts, err}
			}()
		}
		if inFlight == 0 && (failed != nil || stopping == nil) {
			if failed != nil {
				return failed
			}
			return ctx.Err()
		}
		var in <-chan item
		if failed == nil && stopping != nil && queued < limit {
			in = msgs
		}
		select {
		case it := <-in:
			enqueue(it)
			drain()
		case res := <-results:
			inFlight--
			r.land(res.f)
			for _, k := range res.parts {
				delete(busy, k)
			}
			if res.err != nil && failed == nil {
				failed = res.err
			}
		case <-stopping:
			stopping = nil // finish the batches in flight, start no more
		}
	}
}

// fly records a batch as in flight (see batchesDone).
func (r *Runner) fly(batch []item) *flight {
	f := &flight{leases: map[*lease]bool{}, done: make(chan struct{})}
	for _, it := range batch {
		if it.lease != nil {
			f.leases[it.lease] = true
		}
	}
	r.mu.Lock()
	r.flights[f] = true
	r.mu.Unlock()
	return f
}

// land records that a batch is done.
func (r *Runner) land(f *flight) {
	r.mu.Lock()
	delete(r.flights, f)
	r.mu.Unlock()
	close(f.done)
}

// dialer is the Dialer of the runner's Kafka connections.
func (r *Runner) dialer() *kafka.Dialer {
	if r.cfg.Dialer != nil {
		return r.cfg.Dialer
	}
	return kafka.DefaultDialer
}

// refreshGaps re-reads, every IdleAfter while this runner knows of open
// gaps, which of them the database still has unresolved: another
// instance may have applied the missing events, or a rebuild's swap may
// have replaced tracking. Without it Ready would stay false until this
// runner applied a later version of each such aggregate itself.
func (r *Runner) refreshGaps(ctx context.Context) {
	t := time.NewTicker(r.cfg.IdleAfter)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Only gaps known before the query may be dropped: one recorded
		// meanwhile is not in its result yet.
		r.mu.Lock()
		before := make(map[string]uint64, len(r.openGaps))
		for id, seen := range r.openGaps {
			before[id] = seen
		}
		r.mu.Unlock()
		if len(before) == 0 {
			continue
		}
		gaps, err := unresolvedGaps(ctx, r.db, r.tracking)
		if err != nil {
			r.log.Warn("refresh gaps", "error", err)
			continue
		}
		open := make(map[string]bool, len(gaps))
		for _, g := range gaps {
			open[strings.ToLower(g.AggregateID)] = true
		}
		r.mu.Lock()
		for id, seen := range before {
			if !open[id] && r.openGaps[id] == seen {
				delete(r.openGaps, id)
			}
		}
		r.mu.Unlock()
	}
}

// setReaderTrouble records whether the reader is failing (see Ready).
func (r *Runner) setReaderTrouble(failing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if failing {
		r.readerTrouble = time.Now()
	} else {
		r.readerTrouble = time.Time{}
	}
}

// processFunc applies a batch and returns how many of its items (a
// prefix) are done.
type processFunc func(runCtx, ctx context.Context, items []item) (int, error)

// fill adds what is available to batch, waiting at most BatchWait (when
// set) for more when the channel runs dry.
func (r *Runner) fill(batch []item, msgs <-chan item) []item {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	for len(batch) < r.cfg.BatchSize {
		select {
		case it, ok := <-msgs:
			if !ok {
				return batch
			}
			batch = append(batch, it)
			continue
		default:
		}
		if r.cfg.BatchWait == 0 {
			return batch
		}
		if wait == nil {
			wait = time.NewTimer(r.cfg.BatchWait)
		}
		select {
		case it, ok := <-msgs:
			if !ok {
				return batch
			}
			batch = append(batch, it)
		case <-wait.C:
			return batch
		}
	}
	return batch
}

// runBatch applies a batch with a context that survives the cancellation
// of ctx for up to ShutdownTimeout, and records the partitions' progress
// for Status.
func (r *Runner) runBatch(ctx context.Context, batch []item, process processFunc) error {
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(r.cfg.ShutdownTimeout, cancel) })
	defer stop()

	sctx, span := r.startApply(bctx, batch)
	done, err := process(ctx, sctx, batch)
	endApply(sctx, span, err)
	r.mu.Lock()
	r.pending -= len(batch)
	for _, it := range batch[:done] {
		if it.dropped() {
			continue
		}
		if l := it.lease; l != nil && !l.applied.Swap(true) {
			r.log.Info("partition applying", "topic", l.key.topic, "partition", l.key.partition,
				"offset", it.m.Offset, "first_commit_after", time.Since(l.acquired).Round(time.Millisecond).String())
		}
		m := &it.m
		k := partitionKey{m.Topic, m.Partition}
		pl := r.partitions[k]
		if pl == nil {
			pl = &PartitionLag{Topic: m.Topic, Partition: m.Partition}
			r.partitions[k] = pl
		}
		pl.Offset, pl.HighWaterMark = m.Offset+1, max(pl.HighWaterMark, m.HighWaterMark)
		pl.Lag = max(pl.HighWaterMark-pl.Offset, 0)
	}
	r.mu.Unlock()
	return err
}

// sleep waits d or until ctx is done, reporting whether it slept fully.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *Runner) backoff(attempt int) time.Duration {
	d := r.cfg.RetryBackoff
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}
