package projection_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const topic = "esflow.World"

type backend struct {
	name string
	open func(t testing.TB) projection.DB
}

var backends = []backend{
	{"postgres", openPostgres},
	{"sqlite", openSQLite},
}

func openPostgres(t testing.TB) projection.DB {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return projection.NewPostgres(pool)
}

func openSQLite(t testing.TB) projection.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "read.db")
	// IMMEDIATE transactions, as internal/projector opens its write
	// handle: runners read tracking before they write.
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return projection.NewSQLite(db)
}

func startBroker(t testing.TB) *broker.Broker {
	t.Helper()
	ctx := context.Background()
	b, err := broker.Start(ctx, broker.Config{Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.CreateTopic(ctx, topic, 8); err != nil {
		t.Fatal(err)
	}
	return b
}

func newWriter(t testing.TB, addr string) *kafka.Writer {
	t.Helper()
	w := &kafka.Writer{
		Addr: kafka.TCP(addr), Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 1000, BatchTimeout: 2 * time.Millisecond, Transport: &kafka.Transport{},
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// worldEvents returns the events of n worlds with k events each
// (creation, then k-1 MakeItSo), grouped per world in version order.
func worldEvents(t testing.TB, n, k int) [][]aggregate.Event {
	t.Helper()
	out := make([][]aggregate.Event, n)
	for i := range out {
		w, err := domain.NewWorld("ruler")
		if err != nil {
			t.Fatal(err)
		}
		for j := 1; j < k; j++ {
			if err := w.MakeItSo("thing"); err != nil {
				t.Fatal(err)
			}
		}
		out[i] = w.PendingEvents()
	}
	return out
}

// messages builds the outbox messages the relay would publish.
func messages(t testing.TB, events []aggregate.Event) []kafka.Message {
	t.Helper()
	var b outbox.Builder
	msgs, err := b.Messages(events, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		hs := make([]kafka.Header, len(m.Headers))
		for j, h := range m.Headers {
			hs[j] = kafka.Header{Key: h.Key, Value: h.Value}
		}
		out[i] = kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: hs}
	}
	return out
}

func flatten(groups [][]aggregate.Event) []aggregate.Event {
	var out []aggregate.Event
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func produce(t testing.TB, w *kafka.Writer, msgs []kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// run starts r in the background; the returned stop cancels it and
// returns Run's error.
func run(t testing.TB, r *projection.Runner) (stop func() error) {
	t.Helper()
	if err := r.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var stopped bool
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func config(b *broker.Broker) projection.RunnerConfig {
	return projection.RunnerConfig{
		Brokers: []string{b.Addr()}, IdleAfter: 300 * time.Millisecond,
		RetryBackoff: 5 * time.Millisecond, MaxAttempts: 3,
	}
}
