package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proccpu"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// brokerChildEnv makes the test binary serve the embedded broker instead
// of running tests (see TestMain), so a benchmark can keep the broker's
// CPU out of its own process and profile, as cmd/esbench does.
const brokerChildEnv = "ESFLOW_RELAY_BENCH_BROKER"

// serveBrokerChild runs the child side: print the address, serve until
// stdin closes.
func serveBrokerChild() int {
	b, err := broker.Start(context.Background(), broker.Config{Partitions: 8})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer b.Close()
	fmt.Println(b.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startBrokerProcess starts the broker in a child process and returns its
// address and process id; the child stops when the benchmark ends.
func startBrokerProcess(b *testing.B) (string, int) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), brokerChildEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		b.Fatal("broker child printed no address")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return strings.TrimSpace(sc.Text()), cmd.Process.Pid
}

// BenchmarkDrain measures what workload 2 of cmd/esbench measures: the
// relay, wired as cmd/relay wires it (kafkapub and relay defaults,
// advisory lock, LISTEN/NOTIFY), draining a backlog of outbox rows of
// ~250-byte envelopes with the standard headers into the embedded broker
// (its own process, 8 partitions): 100,000 rows, as cmd/esbench drains.
// Each iteration refills the outbox with the same rows (outside the
// timer) and times one drain from the relay's start until every row was
// acknowledged and deleted. Beside events/s it reports the time spent in
// each call (they overlap) and the CPU time of the relay process, of the
// database backends serving it and of the broker process.
func BenchmarkDrain(b *testing.B) {
	const (
		backlog = 100_000
		perAgg  = 100
	)
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: dsn, Registry: reg, CreateTables: true,
		Outbox: &outbox.Builder{}})
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()

	fillTemplate(b, app, pool, backlog, perAgg)
	var topic string
	if err := pool.QueryRow(ctx, `SELECT topic FROM drain_template LIMIT 1`).Scan(&topic); err != nil {
		b.Fatal(err)
	}

	addr, brokerPID := startBrokerProcess(b)
	kc := &kafka.Client{Addr: kafka.TCP(addr)}
	if _, err := kc.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 8, ReplicationFactor: 1}}}); err != nil {
		b.Fatal(err)
	}
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{addr}, AutoCreateTopics: true, Partitions: 8})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	box := app.Outbox()

	var published atomic.Int64
	drained := make(chan struct{}, 1)
	if _, ok := box.(relay.ExceptFetcher); !ok {
		b.Fatal("the PostgreSQL outbox is no relay.ExceptFetcher")
	}
	src := &timedSource{Source: box}
	tpub := &timedPublisher{Publisher: pub}
	r, err := relay.New(src, tpub, relay.Config{
		Locker: box, Waker: box, Logger: slog.New(slog.DiscardHandler),
		Hooks: relay.Hooks{Published: func(k int, _, _ time.Duration) {
			if published.Add(int64(k)) == backlog {
				drained <- struct{}{}
			}
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	var total, cpu, pgCPU, brokerCPU time.Duration
	src.reset()
	tpub.reset()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		// No VACUUM or ANALYZE: like a backlog just written, the rows
		// have no hint bits yet and the planner no statistics for them.
		if _, err := pool.Exec(ctx, `INSERT INTO esflow_outbox (topic, key, value, headers, key_hash) SELECT * FROM drain_template`); err != nil {
			b.Fatal(err)
		}
		published.Store(0)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		cpu0 := proccpu.Self()
		// The database side: the backends serving this database (the
		// relay's pool and lock connection), read from /proc.
		backends := backendPIDs(b, pool)
		pg0, broker0 := proccpu.PIDs(backends...), proccpu.PIDs(brokerPID)
		start := time.Now()
		go func() { done <- r.Run(rctx) }()
		select {
		case <-drained:
		case err := <-done:
			b.Fatalf("relay stopped: %v", err)
		case <-time.After(2 * time.Minute):
			b.Fatal("relay did not drain the backlog in 2 minutes")
		}
		total += time.Since(start)
		cpu += proccpu.Self() - cpu0
		pgCPU += proccpu.PIDs(backendPIDs(b, pool)...) - pg0
		brokerCPU += proccpu.PIDs(brokerPID) - broker0
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		left, err := box.Backlog(ctx, outbox.Shard{})
		if err != nil {
			b.Fatal(err)
		}
		if left.Messages != 0 {
			b.Fatalf("%d messages left", left.Messages)
		}
	}
	b.ReportMetric(float64(b.N*backlog)/total.Seconds(), "events/s")
	// Where the wall time went, per drain: the calls may overlap.
	perDrain := func(ns int64) float64 { return float64(ns) / 1e6 / float64(b.N) }
	b.ReportMetric(perDrain(src.fetch.Load()), "fetch-ms")
	b.ReportMetric(perDrain(tpub.publish.Load()), "publish-ms")
	b.ReportMetric(perDrain(src.del.Load()), "delete-ms")
	b.ReportMetric(float64(src.fetches.Load())/float64(b.N), "fetches")
	// The relay process's own CPU time: less sensitive to a busy machine
	// than the wall time.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "relay-cpu-ms")
	b.ReportMetric(float64(pgCPU.Microseconds())/1000/float64(b.N), "pg-cpu-ms")
	b.ReportMetric(float64(brokerCPU.Microseconds())/1000/float64(b.N), "broker-cpu-ms")
}

// timedSource adds up the time spent in Fetch and Delete. It wraps a
// PostgreSQL outbox, which implements relay.ExceptFetcher.
type timedSource struct {
	outbox.Source
	fetch, del, fetches atomic.Int64
}

func (s *timedSource) reset() { s.fetch.Store(0); s.del.Store(0); s.fetches.Store(0) }

func (s *timedSource) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	start := time.Now()
	defer func() { s.fetch.Add(int64(time.Since(start))); s.fetches.Add(1) }()
	return s.Source.Fetch(ctx, shard, limit)
}

func (s *timedSource) FetchExcept(ctx context.Context, shard outbox.Shard, limit int, except []int64) ([]outbox.Message, error) {
	start := time.Now()
	defer func() { s.fetch.Add(int64(time.Since(start))); s.fetches.Add(1) }()
	return s.Source.(relay.ExceptFetcher).FetchExcept(ctx, shard, limit, except)
}

func (s *timedSource) Delete(ctx context.Context, ids []int64) error {
	start := time.Now()
	defer func() { s.del.Add(int64(time.Since(start))) }()
	return s.Source.Delete(ctx, ids)
}

// timedPublisher adds up the time spent in Publish.
type timedPublisher struct {
	relay.Publisher
	publish atomic.Int64
}

func (p *timedPublisher) reset() { p.publish.Store(0) }

func (p *timedPublisher) Publish(ctx context.Context, msgs []outbox.Message) error {
	start := time.Now()
	defer func() { p.publish.Add(int64(time.Since(start))) }()
	return p.Publisher.Publish(ctx, msgs)
}

// fillTemplate saves n events in aggregates of perAgg events and moves the
// outbox rows they made into the table drain_template.
func fillTemplate(tb testing.TB, app *application.Application, pool *pgxpool.Pool, n, perAgg int) {
	tb.Helper()
	ctx := context.Background()
	what := strings.Repeat("x", 120)
	for range n / perAgg {
		w, err := domain.NewWorld("gods")
		if err != nil {
			tb.Fatal(err)
		}
		for range perAgg - 1 {
			if err := w.MakeItSo(what); err != nil {
				tb.Fatal(err)
			}
		}
		if err := app.Save(ctx, w); err != nil {
			tb.Fatal(err)
		}
	}
	for _, q := range []string{
		`CREATE TABLE drain_template AS SELECT topic, key, value, headers, key_hash FROM esflow_outbox ORDER BY id`,
		`DELETE FROM esflow_outbox`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			tb.Fatal(err)
		}
	}
}

// backendPIDs returns the process ids of the PostgreSQL backends connected
// to pool's database, other than the one asking.
func backendPIDs(tb testing.TB, pool *pgxpool.Pool) []int {
	rows, err := pool.Query(context.Background(),
		`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	if err != nil {
		tb.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out
}
