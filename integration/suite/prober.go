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
// read model shows it.
type Prober struct {
	pool     *pgxpool.Pool
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
func NewProber(ctx context.Context, w Writer, pool *pgxpool.Pool, interval time.Duration) (*Prober, error) {
	p := &Prober{pool: pool, writer: w, ids: make([]uuid.UUID, Partitions), interval: interval}
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
		p.mu.Lock()
		for _, w := range p.writes {
			if w.visible.IsZero() && have[w.part] >= w.version {
				w.visible = now
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
func (p *Prober) CurrentAfter(t0 time.Time, timeout time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		first := make([]*probeWrite, len(p.ids))
		for _, w := range p.writes {
			if !w.at.Before(t0) && (first[w.part] == nil || w.at.Before(first[w.part].at)) {
				first[w.part] = w
			}
		}
		var worst time.Duration
		done := true
		for _, w := range first {
			if w == nil || w.visible.IsZero() {
				done = false
				break
			}
			worst = max(worst, w.visible.Sub(t0))
		}
		p.mu.Unlock()
		if done {
			return worst, true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MaxLatency is the longest a probe write sent in [from, to] took to
// become visible, over all partitions: the longest stall any partition
// had in that window, plus the pipeline's own latency. It waits (at most
// timeout) for the window's writes to be visible; ok is false if one is
// not by then.
func (p *Prober) MaxLatency(from, to time.Time, timeout time.Duration) (time.Duration, bool) {
	ok := p.settle(to, timeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	var worst time.Duration
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
	}
	return worst, ok
}

// Latencies returns the write-to-visible times of the probe writes sent
// in [from, to] that are visible, sorted.
func (p *Prober) Latencies(from, to time.Time) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for _, w := range p.writes {
		if !w.at.Before(from) && !w.at.After(to) && !w.visible.IsZero() {
			out = append(out, w.visible.Sub(w.at))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
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
	return fmt.Sprintf("partition %d, sent at +%dms, visible at +%dms", worst.part,
		worst.at.Sub(from).Milliseconds(), worst.visible.Sub(from).Milliseconds())
}
