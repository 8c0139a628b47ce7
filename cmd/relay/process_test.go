package main

// Process-level tests: the relay binary runs as a real subprocess against
// a fresh PostgreSQL database and an embedded Kafka broker living in the
// test process. Writers and the checker run in the test process.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
)

const (
	worldTopic = "esflow.World"
	partitions = 8
)

// bins builds the relay once per test binary.
var bins *proctest.Builds

func TestMain(m *testing.M) {
	bins = proctest.NewBuilds()
	code := pgtest.Main(m)
	bins.Close()
	os.Exit(code)
}

func startRelay(t *testing.T, name, dbURL, brokers, httpAddr string, extra ...string) *proctest.Process {
	t.Helper()
	return proctest.Start(t, proctest.Command{
		Name:  name,
		Path:  bins.Path(t, "."),
		Args:  append([]string{"-http-addr", httpAddr, "-log-format", "text"}, extra...),
		Env:   []string{"DATABASE_URL=" + dbURL, "KAFKA_BROKERS=" + brokers},
		Unset: []string{application.EnvDBURI, "KAFKA_*"},
	})
}

// ledger records committed events: per aggregate, the number of events
// committed so far (versions 0..n-1).
type ledger struct {
	mu sync.Mutex
	n  map[uuid.UUID]uint64
}

func newLedger() *ledger { return &ledger{n: map[uuid.UUID]uint64{}} }

func (l *ledger) record(id uuid.UUID, count uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[id] = count
}

func (l *ledger) snapshot() map[uuid.UUID]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[uuid.UUID]uint64, len(l.n))
	for k, v := range l.n {
		m[k] = v
	}
	return m
}

func total(m map[uuid.UUID]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// checker reads every partition of the topic from the first offset and
// records, per aggregate, the versions received in order.
type checker struct {
	mu       sync.Mutex
	seq      map[uuid.UUID][]uint64
	received int
	bad      []string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func startChecker(t *testing.T, addr string) *checker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{seq: map[uuid.UUID][]uint64{}, cancel: cancel}
	for p := 0; p < partitions; p++ {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: []string{addr}, Topic: worldTopic, Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			t.Fatal(err)
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
				env, err := outbox.DecodeEnvelope(m.Value)
				c.mu.Lock()
				c.received++
				if err != nil {
					c.bad = append(c.bad, fmt.Sprintf("partition %d offset %d: %v", m.Partition, m.Offset, err))
				} else {
					if string(m.Key) != env.AggregateID.String() {
						c.bad = append(c.bad, fmt.Sprintf("key %q != aggregate id %s", m.Key, env.AggregateID))
					}
					c.seq[env.AggregateID] = append(c.seq[env.AggregateID], env.AggregateVersion)
				}
				c.mu.Unlock()
			}
		}()
	}
	t.Cleanup(c.close)
	return c
}

func (c *checker) close() {
	c.cancel()
	c.wg.Wait()
}

// result compares what was received with the committed events: from[id]
// is the first version expected (events before it were published
// elsewhere), to[id] the number committed. missing counts committed events
// not received yet; problems lists ordering violations.
type result struct {
	received, duplicates, missing int
	problems                      []string
}

func (c *checker) check(from, to map[uuid.UUID]uint64) result {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := result{received: c.received}
	r.problems = append(r.problems, c.bad...)
	for id, seq := range c.seq {
		start := from[id]
		seen := map[uint64]bool{}
		next := start
		for _, v := range seq {
			if seen[v] {
				r.duplicates++
				continue
			}
			seen[v] = true
			if v != next {
				r.problems = append(r.problems, fmt.Sprintf("aggregate %s: got version %d, want %d (received %v)", id, v, next, short(seq)))
				break
			}
			next++
		}
		if _, ok := to[id]; !ok {
			// Committed but unrecorded saves cannot happen here: writers
			// stop only between saves.
			r.problems = append(r.problems, fmt.Sprintf("aggregate %s: received but never committed", id))
		}
	}
	for id, n := range to {
		got := from[id] + uint64(len(dedupe(c.seq[id])))
		if got < n {
			r.missing += int(n - got)
		}
	}
	return r
}

func dedupe(s []uint64) []uint64 {
	seen := map[uint64]bool{}
	var out []uint64
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func short(s []uint64) string {
	if len(s) > 30 {
		return fmt.Sprint(s[:30]) + "…"
	}
	return fmt.Sprint(s)
}

// modes are the PostgreSQL outbox modes the fault tests run in.
var modes = []application.OutboxMode{application.OutboxTable, application.OutboxWAL}

func newApp(t *testing.T, dbURL string, mode application.OutboxMode) *application.Application {
	t.Helper()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: dbURL, Outbox: &outbox.Builder{}, Registry: reg, CreateTables: true, OutboxMode: mode,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

// saveWorld appends one event to w, saves it and records it.
func saveWorld(ctx context.Context, app *application.Application, l *ledger, w *domain.World, what string) error {
	if err := w.MakeItSo(what); err != nil {
		return err
	}
	if err := app.Save(ctx, w); err != nil {
		return err
	}
	l.record(w.ID(), w.Version())
	return nil
}

func newWorld(ctx context.Context, app *application.Application, l *ledger) (*domain.World, error) {
	w, err := domain.NewWorld("earth")
	if err != nil {
		return nil, err
	}
	if err := app.Save(ctx, w); err != nil {
		return nil, err
	}
	l.record(w.ID(), w.Version())
	return w, nil
}

// startWriters runs n writers until the returned stop is called; stop
// returns only after every writer finished its current save, so every
// committed event is in the ledger.
func startWriters(t *testing.T, app *application.Application, l *ledger, n int) (stop func()) {
	t.Helper()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			var worlds []*domain.World
			for j := 0; ; j++ {
				select {
				case <-quit:
					return
				default:
				}
				if len(worlds) < 5 || rand.IntN(20) == 0 {
					w, err := newWorld(ctx, app, l)
					if err != nil {
						errs <- fmt.Errorf("writer %d: new world: %w", i, err)
						return
					}
					worlds = append(worlds, w)
				} else {
					w := worlds[rand.IntN(len(worlds))]
					if err := saveWorld(ctx, app, l, w, "thing "+strconv.Itoa(j)); err != nil {
						errs <- fmt.Errorf("writer %d: save: %w", i, err)
						return
					}
				}
				time.Sleep(time.Duration(2+rand.IntN(4)) * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func backlog(t *testing.T, app *application.Application) int64 {
	t.Helper()
	b, err := app.Outbox().Backlog(context.Background(), outbox.Shard{})
	if err != nil {
		t.Fatalf("backlog: %v", err)
	}
	return b.Messages
}

// converge waits until every committed event was received and the backlog
// is empty, then verifies the ordering.
func converge(t *testing.T, app *application.Application, c *checker, from, to map[uuid.UUID]uint64, timeout time.Duration) result {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var r result
	var bl int64
	for {
		r = c.check(from, to)
		bl = backlog(t, app)
		if r.missing == 0 && bl == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence after %s: %d events missing, backlog %d, received %d, problems %v",
				timeout, r.missing, bl, r.received, firstN(r.problems, 5))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let stragglers (duplicates) arrive, then check again.
	time.Sleep(300 * time.Millisecond)
	r = c.check(from, to)
	if len(r.problems) > 0 {
		t.Errorf("%d ordering problems, first: %v", len(r.problems), firstN(r.problems, 5))
	}
	return r
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func startBroker(t *testing.T, addr string) *broker.Broker {
	t.Helper()
	var b *broker.Broker
	var err error
	for i := 0; i < 50; i++ { // the port may take a moment to free up
		b, err = broker.Start(context.Background(), broker.Config{Addr: addr, Partitions: partitions, Topics: []string{worldTopic}})
		if err == nil {
			t.Cleanup(func() { b.Close() })
			return b
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("starting broker on %s: %v", addr, err)
	return nil
}

func metric(addr, name string) (float64, bool, error) {
	return proctest.Metric("http://"+addr+"/metrics", name)
}

func waitMetric(t *testing.T, p *proctest.Process, addr, name string, want float64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		if !p.Running() {
			t.Fatalf("%s exited: %v", p.Name(), p.Err())
		}
		v, ok, err := metric(addr, name)
		if err == nil && ok && v == want {
			return time.Since(start)
		}
		last = fmt.Sprintf("value %v present %v err %v", v, ok, err)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not become %v within %s (last: %s)", p.Name(), name, want, timeout, last)
	return 0
}

// TestKill9Cycles kills the relay with SIGKILL again and again while
// writers commit, each time a moment after it became active, in both
// outbox modes, and checks that every committed event arrives in order.
func TestKill9Cycles(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) { testKill9Cycles(t, mode) })
	}
}

func testKill9Cycles(t *testing.T, mode application.OutboxMode) {
	dbURL := pgtest.NewDatabase(t)
	b := startBroker(t, "127.0.0.1:0")
	app := newApp(t, dbURL, mode)
	l := newLedger()
	c := startChecker(t, b.Addr())

	cycles := 20
	if testing.Short() {
		cycles = 6
	}
	// A short lease: a killed relay's successor waits for it to expire
	// (see pkg/relay/DESIGN.md, "Fencing").
	args := []string{"-outbox-mode", string(mode), "-lease", "600ms"}
	stopWriters := startWriters(t, app, l, 4)
	for i := 0; i <= cycles; i++ {
		addr := proctest.FreeAddr(t)
		p := startRelay(t, "relay-"+strconv.Itoa(i), dbURL, b.Addr(), addr, args...)
		waitMetric(t, p, addr, "esflow_relay_active", 1, 30*time.Second)
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		if !p.Running() {
			t.Fatalf("%s exited on its own: %v\n%s", p.Name(), p.Err(), proctest.Tail(p.Output(), 3000))
		}
		if i == cycles {
			// The last relay of the cycles ran a little: stop writing,
			// kill it too, and let a fresh final relay finish.
			stopWriters()
		}
		p.Kill(t)
	}
	startRelay(t, "relay-final", dbURL, b.Addr(), "127.0.0.1:0", args...)

	committed := l.snapshot()
	r := converge(t, app, c, nil, committed, 60*time.Second)
	t.Logf("%s mode: kill -9 cycles: %d; aggregates: %d; events written: %d; received: %d; duplicates: %d",
		mode, cycles, len(committed), total(committed), r.received, r.duplicates)
}

// TestBrokerOutage stops the broker while writers commit, in both outbox
// modes: nothing may be dropped without an acknowledgement, and once an
// empty broker is back on the same address everything written during the
// outage arrives in order.
func TestBrokerOutage(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) { testBrokerOutage(t, mode) })
	}
}

func testBrokerOutage(t *testing.T, mode application.OutboxMode) {
	dbURL := pgtest.NewDatabase(t)
	b := startBroker(t, "127.0.0.1:0")
	addr := b.Addr()
	app := newApp(t, dbURL, mode)
	l := newLedger()
	c := startChecker(t, addr)
	opsAddr := proctest.FreeAddr(t)
	p := startRelay(t, "relay", dbURL, addr, opsAddr, "-outbox-mode", string(mode))
	ctx := context.Background()

	// Batch A: published fully before the outage.
	var worlds []*domain.World
	for i := range 20 {
		w, err := newWorld(ctx, app, l)
		if err != nil {
			t.Fatal(err)
		}
		worlds = append(worlds, w)
		for j := range 4 {
			if err := saveWorld(ctx, app, l, w, fmt.Sprintf("a %d %d", i, j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := l.snapshot()
	ra := converge(t, app, c, nil, a, 30*time.Second)
	c.close()
	t.Logf("batch A: %d events published (received %d, duplicates %d)", total(a), ra.received, ra.duplicates)

	// Outage: the broker goes away; batch B is written while it is down.
	b.Close()
	down := time.Now()
	var n int
	for time.Since(down) < 4*time.Second {
		w := worlds[rand.IntN(len(worlds))]
		if n%10 == 0 {
			nw, err := newWorld(ctx, app, l)
			if err != nil {
				t.Fatal(err)
			}
			worlds = append(worlds, nw)
		}
		if err := saveWorld(ctx, app, l, w, "b "+strconv.Itoa(n)); err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Running() {
		t.Fatalf("relay exited during the outage: %v\n%s", p.Err(), proctest.Tail(p.Output(), 3000))
	}
	bl := backlog(t, app)
	if mode == application.OutboxWAL {
		// The writer's view has no decoded messages: the slot's WAL after
		// its confirmed position is the backlog.
		v, ok, err := metric(opsAddr, "esflow_relay_slot_unconfirmed_wal_bytes")
		if err != nil || !ok {
			t.Fatalf("slot metric: %v (present %v)", err, ok)
		}
		bl = int64(v)
	}
	if bl == 0 {
		t.Fatalf("backlog is 0 during the outage: events were deleted or confirmed without a broker ack")
	}
	errs, _, err := metric(opsAddr, "esflow_relay_errors_total")
	if err != nil || errs == 0 {
		t.Errorf("esflow_relay_errors_total = %v (err %v) during the outage, want > 0", errs, err)
	}
	bEnd := l.snapshot()
	t.Logf("during the outage: %d events written, backlog %d, relay errors %v", total(bEnd)-total(a), bl, errs)

	// The broker comes back (empty) on the same address.
	b2 := startBroker(t, addr)
	back := time.Now()
	c2 := startChecker(t, b2.Addr())
	r := converge(t, app, c2, a, bEnd, 60*time.Second)
	if !p.Running() {
		t.Fatalf("relay exited: %v", p.Err())
	}
	if r.received < int(total(bEnd)-total(a)) {
		t.Errorf("received %d on the new broker, want at least %d", r.received, total(bEnd)-total(a))
	}
	t.Logf("broker down %s; batch B: %d events, all received %s after the broker returned (received %d, duplicates %d)",
		back.Sub(down).Round(time.Millisecond), total(bEnd)-total(a), time.Since(back).Round(time.Millisecond), r.received, r.duplicates)
}

func TestTwoRelaysFailover(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	b := startBroker(t, "127.0.0.1:0")
	app := newApp(t, dbURL, application.OutboxTable)
	l := newLedger()
	c := startChecker(t, b.Addr())

	addr1, addr2 := proctest.FreeAddr(t), proctest.FreeAddr(t)
	r1 := startRelay(t, "R1", dbURL, b.Addr(), addr1)
	waitMetric(t, r1, addr1, "esflow_relay_active", 1, 15*time.Second)

	stopWriters := startWriters(t, app, l, 2)
	r2 := startRelay(t, "R2", dbURL, b.Addr(), addr2)
	// R2 is up (serving metrics) but passive.
	waitMetric(t, r2, addr2, "esflow_relay_active", 0, 15*time.Second)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if v, ok, err := metric(addr2, "esflow_relay_active"); err != nil || !ok || v != 0 {
			t.Fatalf("R2 esflow_relay_active = %v (present %v, err %v), want 0 while R1 is alive", v, ok, err)
		}
		if v, ok, err := metric(addr2, "esflow_relay_published_total"); err != nil || (ok && v != 0) {
			t.Fatalf("R2 esflow_relay_published_total = %v (err %v), want 0 or absent while R1 is alive", v, err)
		}
		if v, _, err := metric(addr1, "esflow_relay_active"); err != nil || v != 1 {
			t.Fatalf("R1 esflow_relay_active = %v (err %v), want 1", v, err)
		}
	}
	pub1, _, _ := metric(addr1, "esflow_relay_published_total")
	if pub1 == 0 {
		t.Errorf("R1 published nothing while events were written")
	}

	r1.Kill(t)
	took := waitMetric(t, r2, addr2, "esflow_relay_active", 1, 5*time.Second)
	t.Logf("R2 active %s after R1 was killed (R1 had published %v)", took.Round(time.Millisecond), pub1)

	time.Sleep(time.Second) // events after the kill
	stopWriters()
	committed := l.snapshot()
	r := converge(t, app, c, nil, committed, 60*time.Second)
	pub2, _, _ := metric(addr2, "esflow_relay_published_total")
	if pub2 == 0 {
		t.Errorf("R2 published nothing after taking over")
	}
	t.Logf("events written: %d (%d aggregates); received %d; duplicates %d; R2 published %v",
		total(committed), len(committed), r.received, r.duplicates, pub2)
}

// TestCheckerDetects makes sure the verification itself catches gaps,
// reordering and duplicates, so the process tests cannot pass vacuously.
func TestCheckerDetects(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	committed := map[uuid.UUID]uint64{a: 4, b: 2}
	for _, tc := range []struct {
		name                string
		seqA, seqB          []uint64
		missing, duplicates int
		problem             bool
	}{
		{name: "exact", seqA: []uint64{0, 1, 2, 3}, seqB: []uint64{0, 1}},
		{name: "redelivered batch", seqA: []uint64{0, 1, 2, 1, 2, 3}, seqB: []uint64{0, 1, 0, 1}, duplicates: 4},
		{name: "missing tail", seqA: []uint64{0, 1}, seqB: []uint64{0, 1}, missing: 2},
		{name: "gap", seqA: []uint64{0, 2, 1, 3}, seqB: []uint64{0, 1}, problem: true},
		{name: "reordered", seqA: []uint64{1, 0, 2, 3}, seqB: []uint64{0, 1}, problem: true},
	} {
		c := &checker{seq: map[uuid.UUID][]uint64{a: tc.seqA, b: tc.seqB}}
		r := c.check(nil, committed)
		if r.missing != tc.missing || r.duplicates != tc.duplicates || (len(r.problems) > 0) != tc.problem {
			t.Errorf("%s: missing %d duplicates %d problems %v; want %d, %d, problem %v",
				tc.name, r.missing, r.duplicates, r.problems, tc.missing, tc.duplicates, tc.problem)
		}
	}
	c := &checker{seq: map[uuid.UUID][]uint64{a: {2, 3}}}
	if r := c.check(map[uuid.UUID]uint64{a: 2}, map[uuid.UUID]uint64{a: 4}); r.missing != 0 || len(r.problems) > 0 {
		t.Errorf("from offset: %+v", r)
	}
	c = &checker{seq: map[uuid.UUID][]uint64{uuid.New(): {0}}}
	if r := c.check(nil, nil); len(r.problems) == 0 {
		t.Errorf("an uncommitted aggregate was not reported")
	}
}
