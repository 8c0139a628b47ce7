package suite

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
)

// Prober times, from the read model's point of view, how long a
// partition of the World topic goes unapplied: it owns one world per
// partition, writes an event to each of them every interval (and at once
// on Kick), and polls the worlds read model every 5 ms for their
// versions. Each write is timed from the moment it was sent until the
// read model shows it, and from when the checker saw it on Kafka, which
// separates the projectors' share from the writer's and relay's.
type Prober struct {
	pool     *pgxpool.Pool
	checker  *TopicChecker
	writer   Writer
	ids      []uuid.UUID // per partition
	interval time.Duration

	kick   []chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	writes []*probeWrite
}

type probeWrite struct {
	part    int
	version uint64
	at      time.Time // the request was sent
	kafka   time.Time // zero until the checker has seen it on the topic
	visible time.Time // zero until the read model has it
}

// WorldPartition is the partition of the World topic that holds an
// aggregate's events: the relay keys messages by aggregate id and maps
// keys with Murmur2, like kafka.Murmur2Balancer.
func WorldPartition(id uuid.UUID) int {
	all := make([]int, Partitions)
	for i := range all {
		all[i] = i
	}
	return kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(id.String())}, all...)
}

// NewProber creates one probe world per partition through w; call Start.
// checker tells when a probe event reached Kafka.
func NewProber(ctx context.Context, w Writer, pool *pgxpool.Pool, checker *TopicChecker, interval time.Duration) (*Prober, error) {
	p := &Prober{pool: pool, checker: checker, writer: w, ids: make([]uuid.UUID, Partitions), interval: interval}
	for missing := Partitions; missing > 0; {
		id := uuid.New()
		part := WorldPartition(id)
		if p.ids[part] != uuid.Nil {
			continue
		}
		if _, err := w.Create(ctx, id, "probe"); err != nil {
			return nil, fmt.Errorf("probe world for partition %d: %w", part, err)
		}
		p.ids[part] = id
		missing--
	}
	return p, nil
}

// IDs returns the probe worlds, one per partition.
func (p *Prober) IDs() []uuid.UUID { return slices.Clone(p.ids) }

// Start begins writing and polling.
func (p *Prober) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.kick = make([]chan struct{}, len(p.ids))
	for part, id := range p.ids {
		p.kick[part] = make(chan struct{}, 1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.writeLoop(ctx, part, id)
		}()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pollLoop(ctx)
	}()
}

// Stop ends writing and polling.
func (p *Prober) Stop() {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
	}
}

// Kick makes every partition's writer write now (right after a fault).
func (p *Prober) Kick() {
	for _, k := range p.kick {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

func (p *Prober) writeLoop(ctx context.Context, part int, id uuid.UUID) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick[part]:
		}
		at := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := p.writer.MakeItSo(wctx, id, "probe", nil)
		cancel()
		if err != nil {
			continue // the writer or the database is restarting: no sample
		}
		p.mu.Lock()
		p.writes = append(p.writes, &probeWrite{part: part, version: v, at: at})
		p.mu.Unlock()
	}
}

func (p *Prober) pollLoop(ctx context.Context) {
	ids := make([]string, len(p.ids))
	for i, id := range p.ids {
		ids[i] = id.String()
	}
	part := map[string]int{}
	for i, id := range ids {
		part[id] = i
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		rows, err := p.pool.Query(ctx, `SELECT id::text, version FROM worlds WHERE id = ANY($1::text[])`, ids)
		if err != nil {
			continue
		}
		have := make([]uint64, len(ids))
		for rows.Next() {
			var id string
			var v int64
			if rows.Scan(&id, &v) == nil {
				have[part[id]] = uint64(v)
			}
		}
		rows.Close()
		now := time.Now()
		onKafka := make([]uint64, len(p.ids))
		for i, id := range p.ids {
			onKafka[i] = p.checker.Prefix(id)
		}
		p.mu.Lock()
		for _, w := range p.writes {
			if w.kafka.IsZero() && onKafka[w.part] >= w.version {
				w.kafka = now
			}
			if w.visible.IsZero() && have[w.part] >= w.version {
				w.visible = now
				if w.kafka.IsZero() || w.kafka.After(now) {
					w.kafka = now // the checker is behind (a broker restart)
				}
			}
		}
		p.mu.Unlock()
	}
}

// settle waits until every write sent up to until is visible, at most
// timeout; it reports whether they all are.
func (p *Prober) settle(until time.Time, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		ok := true
		for _, w := range p.writes {
			if !w.at.After(until) && w.visible.IsZero() {
				ok = false
				break
			}
		}
		p.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CurrentAfter is the time from t0 until every partition showed in the
// read model an event written after t0: for each partition its first
// probe write sent at or after t0, the worst of them. It waits (at most
// timeout) until such a write of every partition is visible; ok is false
// if one is not by then.
//
// fromKafka is the same from the projectors' point of view: per
// partition, from the later of t0 and that write's arrival on Kafka until
// it was visible, the worst of them.
func (p *Prober) CurrentAfter(t0 time.Time, timeout time.Duration) (worst, fromKafka time.Duration, ok bool) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		first := make([]*probeWrite, len(p.ids))
		for _, w := range p.writes {
			if !w.at.Before(t0) && (first[w.part] == nil || w.at.Before(first[w.part].at)) {
				first[w.part] = w
			}
		}
		worst, fromKafka = 0, 0
		done := true
		for _, w := range first {
			if w == nil || w.visible.IsZero() {
				done = false
				break
			}
			worst = max(worst, w.visible.Sub(t0))
			fromKafka = max(fromKafka, w.visible.Sub(latest(t0, w.kafka)))
		}
		p.mu.Unlock()
		if done {
			return worst, fromKafka, true
		}
		if time.Now().After(deadline) {
			return 0, 0, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MaxLatency is the longest a probe write sent in [from, to] took to
// become visible, over all partitions: the longest stall any partition
// had in that window, plus the pipeline's own latency. It waits (at most
// timeout) for the window's writes to be visible; ok is false if one is
// not by then.
//
// fromKafka is the longest such a write took from its arrival on Kafka:
// the projectors' share.
func (p *Prober) MaxLatency(from, to time.Time, timeout time.Duration) (worst, fromKafka time.Duration, ok bool) {
	ok = p.settle(to, timeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for _, w := range p.writes {
		if w.at.Before(from) || w.at.After(to) {
			continue
		}
		vis := w.visible
		if vis.IsZero() {
			vis = now
		}
		worst = max(worst, vis.Sub(w.at))
		if !w.kafka.IsZero() {
			fromKafka = max(fromKafka, vis.Sub(w.kafka))
		}
	}
	return worst, fromKafka, ok
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Latencies returns the write-to-visible times of the probe writes sent
// in [from, to] that are visible, sorted.
//
// fromKafka are the same writes' times from their arrival on Kafka.
func (p *Prober) Latencies(from, to time.Time) (all, fromKafka []time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.writes {
		if !w.at.Before(from) && !w.at.After(to) && !w.visible.IsZero() {
			all = append(all, w.visible.Sub(w.at))
			fromKafka = append(fromKafka, w.visible.Sub(w.kafka))
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Slice(fromKafka, func(i, j int) bool { return fromKafka[i] < fromKafka[j] })
	return all, fromKafka
}

// ReadPool is the pool the pipeline reads the read model with.
func (p *Pipeline) ReadPool() *pgxpool.Pool { return p.readPool }

// Worst describes the probe write sent in [from, to] that took longest to
// become visible: its partition, when it was sent (from from) and how
// long it took; for logs.
func (p *Prober) Worst(from, to time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst *probeWrite
	for _, w := range p.writes {
		if w.at.Before(from) || w.at.After(to) || w.visible.IsZero() {
			continue
		}
		if worst == nil || w.visible.Sub(w.at) > worst.visible.Sub(worst.at) {
			worst = w
		}
	}
	if worst == nil {
		return "no visible probe write"
	}
	return fmt.Sprintf("partition %d, sent at +%dms, on Kafka at +%dms, visible at +%dms", worst.part,
		worst.at.Sub(from).Milliseconds(), worst.kafka.Sub(from).Milliseconds(), worst.visible.Sub(from).Milliseconds())
}
