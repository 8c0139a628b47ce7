package mysql_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// pipeline is an application writing to a MariaDB outbox and a relay
// publishing it into the embedded Kafka broker.
type pipeline struct {
	app    *application.Application
	broker *broker.Broker
	relay  *relay.Relay
	parked atomic.Int64
}

func newApp(t *testing.T, url string) *application.Application {
	t.Helper()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: url, Registry: reg, CreateTables: true, Outbox: &outbox.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app
}

// startPipeline starts the relay on relayApp's outbox. With wake, the
// outbox is the relay's Waker (in-process signals, and its own poll of
// the highest id for commits through other connections); without, the
// relay only polls.
func startPipeline(t *testing.T, writer, relayApp *application.Application, wake bool) *pipeline {
	t.Helper()
	b, err := broker.Start(context.Background(), broker.Config{Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kafkapub.New(kafkapub.Config{Brokers: []string{b.Addr()}, AutoCreateTopics: true, Partitions: 8, MaxMessageBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{app: writer, broker: b}
	box := relayApp.Outbox()
	cfg := relay.Config{
		BatchSize: 200, Locker: box,
		Hooks: relay.Hooks{Parked: func(outbox.Message, error) { p.parked.Add(1) }},
	}
	if wake {
		cfg.Waker = box // relay's default poll with a Waker: 1 s
	} else {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if p.relay, err = relay.New(box, pub, cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
		pub.Close()
		b.Close()
	})
	return p
}

// consume reads topic until want distinct events are seen, returning each
// aggregate's received versions in arrival order.
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
	for id, want := range last {
		next := uint64(0)
		for _, v := range got[id] {
			switch {
			case v < next: // a redelivery of something already seen
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
}

func waitDrained(t *testing.T, box application.Outbox) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		bl, err := box.Backlog(context.Background(), outbox.Shard{})
		if err == nil && bl.Messages == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog not drained: %+v %v", bl, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRelayConcurrentWritersEveryEventInOrder: writers save concurrently
// through the application on MariaDB; a relay drains the outbox into
// Kafka. Every committed event arrives, each aggregate's in version order.
// The "other process" modes run the relay on a second application on the
// same database, as a relay process would: commit signals of the writer
// never reach it.
func TestRelayConcurrentWritersEveryEventInOrder(t *testing.T) {
	for _, mode := range []struct {
		name            string
		otherProc, wake bool
	}{
		{"same process, wake", false, true},
		{"other process, wake", true, true},
		{"other process, polling", true, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			url := mysqltest.NewDatabase(t)
			writer := newApp(t, url)
			relayApp := writer
			if mode.otherProc {
				relayApp = newApp(t, url)
			}
			p := startPipeline(t, writer, relayApp, mode.wake)
			ctx := context.Background()
			const writers, perWriter = 6, 40
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
			waitDrained(t, writer.Outbox())
			if !p.relay.Active() {
				t.Errorf("relay not active")
			}
		})
	}
}

// TestRelayRefusedMessageIsParkedOthersFlow: a message the broker refuses
// for good is parked with its reason and does not block the others.
func TestRelayRefusedMessageIsParkedOthersFlow(t *testing.T) {
	app := newApp(t, mysqltest.NewDatabase(t))
	p := startPipeline(t, app, app, true)
	ctx := context.Background()
	huge, _ := domain.NewWorld("gods")
	huge.MakeItSo(strings.Repeat("x", 100<<10)) // over the publisher's 64 KiB limit
	small, _ := domain.NewWorld("gods")
	small.MakeItSo("fits")
	if err := app.Save(ctx, huge, small); err != nil {
		t.Fatal(err)
	}
	later, _ := domain.NewWorld("later")
	if err := app.Save(ctx, later); err != nil {
		t.Fatal(err)
	}
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
	waitDrained(t, app.Outbox())
	type parkedCounter interface {
		Parked(context.Context, outbox.Shard) (int64, error)
	}
	pc, ok := app.Outbox().(parkedCounter)
	if !ok {
		t.Fatal("MariaDB outbox does not count parked messages")
	}
	if n, err := pc.Parked(ctx, outbox.Shard{}); err != nil || n != 1 {
		t.Fatalf("parked rows = %d, %v; want 1 kept with its reason", n, err)
	}
}
