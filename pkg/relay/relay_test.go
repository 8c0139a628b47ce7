package relay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

func TestMain(m *testing.M) {
	if os.Getenv(brokerChildEnv) == "1" {
		os.Exit(serveBrokerChild()) // BenchmarkDrain's broker process
	}
	os.Exit(pgtest.Main(m))
}

type pipeline struct {
	app    *application.Application
	broker *broker.Broker
	relay  *relay.Relay
	parked atomic.Int64
	stop   func()
	done   chan error
}

func start(t *testing.T, dbURL string, topics map[string]string) *pipeline {
	t.Helper()
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{
		DatabaseURL: dbURL, Registry: reg, CreateTables: true,
		Outbox: &outbox.Builder{Router: outbox.Router{EventTopics: topics}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.Start(ctx, broker.Config{Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{b.Addr()}, AutoCreateTopics: true, Partitions: 8, MaxMessageBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{app: app, broker: b, done: make(chan error, 1)}
	box := app.Outbox()
	p.relay, err = relay.New(box, pub, relay.Config{
		// Small batches: a drain is many full batches, so the relay
		// fetches each next batch while publishing the current one.
		BatchSize: 50, Locker: box, Waker: box,
		Hooks: relay.Hooks{Parked: func(outbox.Message, error) { p.parked.Add(1) }},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	p.stop = cancel
	go func() { p.done <- p.relay.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
		pub.Close()
		b.Close()
		app.Close()
	})
	return p
}

// consume reads topic until want events are seen or the deadline passes,
// returning each aggregate's received versions in arrival order.
func consume(t *testing.T, addr, topic string, want int) map[uuid.UUID][]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: "check-" + uuid.NewString(), Topic: topic,
		StartOffset: kafka.FirstOffset, CommitInterval: time.Second, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	got := map[uuid.UUID][]uint64{}
	seen := map[string]bool{}
	for len(seen) < want {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("consume: %v after %d of %d events", err, len(seen), want)
		}
		env, err := outbox.DecodeEnvelope(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Key) != env.AggregateID.String() {
			t.Fatalf("key %s for aggregate %s", m.Key, env.AggregateID)
		}
		got[env.AggregateID] = append(got[env.AggregateID], env.AggregateVersion)
		seen[fmt.Sprint(env.AggregateID, env.AggregateVersion)] = true
	}
	return got
}

// checkOrder verifies that, duplicates aside, every aggregate's versions
// arrived as 0, 1, 2, … up to its last version.
func checkOrder(t *testing.T, got map[uuid.UUID][]uint64, last map[uuid.UUID]uint64) {
	t.Helper()
	dups := 0
	for id, want := range last {
		next := uint64(0)
		for _, v := range got[id] {
			switch {
			case v < next:
				dups++ // a redelivery of something already seen
			case v == next:
				next++
			default:
				t.Fatalf("aggregate %s: version %d arrived before %d", id, v, next)
			}
		}
		if next != want+1 {
			t.Fatalf("aggregate %s: received up to %d, committed up to %d", id, next, want)
		}
	}
	t.Logf("%d aggregates in order, %d duplicates", len(last), dups)
}

func TestConcurrentWritersEveryEventInOrder(t *testing.T) {
	for name, url := range map[string]string{
		"postgres": pgtest.NewDatabase(t),
		"sqlite":   "sqlite://" + t.TempDir() + "/relay.db",
	} {
		t.Run(name, func(t *testing.T) {
			p := start(t, url, nil)
			ctx := context.Background()
			const writers, perWriter = 6, 100
			var mu sync.Mutex
			last := map[uuid.UUID]uint64{}
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					worlds := make([]*domain.World, 4)
					for i := range perWriter {
						w := worlds[i%len(worlds)]
						if w == nil {
							w, _ = domain.NewWorld("gods")
							worlds[i%len(worlds)] = w
						}
						w.MakeItSo(fmt.Sprint("thing ", i))
						if i%3 == 0 {
							w.MakeItSo("and another")
						}
						if err := p.app.Save(ctx, w); err != nil {
							t.Errorf("save: %v", err)
							return
						}
						mu.Lock()
						last[w.ID()] = w.Version() - 1
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			total := 0
			for _, v := range last {
				total += int(v) + 1
			}
			checkOrder(t, consume(t, p.broker.Addr(), "esflow.World", total), last)
			deadline := time.Now().Add(10 * time.Second)
			for {
				bl, err := p.app.Outbox().Backlog(ctx, outbox.Shard{})
				if err == nil && bl.Messages == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("backlog not drained: %+v %v", bl, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !p.relay.Active() {
				t.Errorf("relay not active")
			}
		})
	}
}

func TestRefusedMessageIsParkedOthersFlow(t *testing.T) {
	p := start(t, pgtest.NewDatabase(t), nil)
	ctx := context.Background()
	huge, _ := domain.NewWorld("gods")
	huge.MakeItSo(strings.Repeat("x", 100<<10)) // over the publisher's 64 KiB limit
	small, _ := domain.NewWorld("gods")
	small.MakeItSo("fits")
	if err := p.app.Save(ctx, huge, small); err != nil {
		t.Fatal(err)
	}
	later, _ := domain.NewWorld("later")
	if err := p.app.Save(ctx, later); err != nil {
		t.Fatal(err)
	}
	// huge's Created (v0) and the two other worlds' events all arrive.
	got := consume(t, p.broker.Addr(), "esflow.World", 4)
	if len(got[small.ID()]) < 2 || len(got[later.ID()]) < 1 || len(got[huge.ID()]) < 1 {
		t.Fatalf("received %v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.parked.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("parked = %d, want 1", p.parked.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	bl, err := p.app.Outbox().Backlog(ctx, outbox.Shard{})
	if err != nil || bl.Messages != 0 {
		t.Fatalf("backlog %+v %v: the parked message must not count or block", bl, err)
	}
	type parkedCounter interface {
		Parked(context.Context, outbox.Shard) (int64, error)
	}
	if pc, ok := p.app.Outbox().(parkedCounter); ok {
		if n, err := pc.Parked(ctx, outbox.Shard{}); err != nil || n != 1 {
			t.Fatalf("parked rows = %d, %v; want 1 kept with its reason", n, err)
		}
	}
}

func TestRunStopsCleanly(t *testing.T) {
	p := start(t, "memory:", nil)
	p.stop()
	select {
	case err := <-p.done:
		p.done <- nil // for the cleanup
		if err != nil {
			t.Fatalf("Run returned %v on cancel", err)
		}
	case <-time.After(10 * time.Second):
		p.done <- nil
		t.Fatal("Run did not return after cancel")
	}
	if _, err := relay.New(nil, nil, relay.Config{}); err == nil {
		t.Error("New without source accepted")
	}
	if _, err := relay.New(p.app.Outbox(), nopPublisher{}, relay.Config{Shard: outbox.Shard{Index: 3, Count: 2}}); err == nil {
		t.Error("invalid shard accepted")
	}
	be := &relay.BatchError{Errs: []error{nil, fmt.Errorf("%w: too big", relay.ErrPermanent)}}
	if !errors.Is(be, relay.ErrPermanent) || !strings.Contains(be.Error(), "1 of 2") {
		t.Errorf("BatchError: %v", be)
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, []outbox.Message) error { return nil }

// flakyPublisher fails, once, the messages of the first call from index
// from on with a retryable error, publishing only those before it.
type flakyPublisher struct {
	relay.Publisher
	from  int
	calls atomic.Int64
}

func (f *flakyPublisher) Publish(ctx context.Context, msgs []outbox.Message) error {
	if f.calls.Add(1) > 1 || len(msgs) <= f.from {
		return f.Publisher.Publish(ctx, msgs)
	}
	if err := f.Publisher.Publish(ctx, msgs[:f.from]); err != nil {
		return err
	}
	errs := make([]error, len(msgs))
	for i := f.from; i < len(msgs); i++ {
		errs[i] = errors.New("injected: broker not available")
	}
	return &relay.BatchError{Errs: errs}
}

// TestFailedBatchDropsPrefetch: when part of a batch fails, the batch the
// relay fetched meanwhile (which holds later messages of the failed key)
// is not published; the failed messages go out again first, so the key's
// versions still arrive in order.
func TestFailedBatchDropsPrefetch(t *testing.T) {
	ctx := context.Background()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: pgtest.NewDatabase(t), Registry: reg, CreateTables: true, Outbox: &outbox.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	// A backlog of 3 aggregates of 120 events, written before the relay
	// starts: each aggregate's events have consecutive ids, so the first
	// batches of 50 hold only the first aggregate.
	last := map[uuid.UUID]uint64{}
	for range 3 {
		w, _ := domain.NewWorld("gods")
		for i := range 119 {
			w.MakeItSo(fmt.Sprint("thing ", i))
		}
		if err := app.Save(ctx, w); err != nil {
			t.Fatal(err)
		}
		last[w.ID()] = w.Version() - 1
	}
	b, err := broker.Start(ctx, broker.Config{Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{b.Addr()}, AutoCreateTopics: true, Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	flaky := &flakyPublisher{Publisher: pub, from: 10}
	box := app.Outbox()
	r, err := relay.New(box, flaky, relay.Config{BatchSize: 50, Locker: box, Waker: box, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()
	checkOrder(t, consume(t, b.Addr(), "esflow.World", 360), last)
}
