package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// fillOutbox saves n events as accounts of up to perAccount events each,
// one account per transaction, from a few writers.
func fillOutbox(ctx context.Context, app *application.Application, n, perAccount int) error {
	const writers = 4
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range writers {
		g.Go(func() error {
			for {
				start := int(next.Add(int64(perAccount))) - perAccount
				if start >= n {
					return nil
				}
				k := min(perAccount, n-start)
				a, err := newAccount()
				if err != nil {
					return err
				}
				if err := a.record(k - 1); err != nil {
					return err
				}
				if err := app.Save(gctx, a); err != nil {
					return fmt.Errorf("fill: %w", err)
				}
			}
		})
	}
	return g.Wait()
}

// kafkaMessages converts outbox messages to kafka-go messages for topic.
func kafkaMessages(msgs []outbox.Message, topic string) []kafka.Message {
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		hs := make([]kafka.Header, len(m.Headers))
		for j, h := range m.Headers {
			hs[j] = kafka.Header{Key: h.Key, Value: h.Value}
		}
		out[i] = kafka.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: hs}
	}
	return out
}

// produce writes msgs with callers concurrent WriteMessages calls of
// chunks of up to 1000 and returns how long it took. With callers > 1 the
// order of one key's messages is not kept: that is the raw limit, not a
// correct relay.
func produce(ctx context.Context, w *kafka.Writer, msgs []kafka.Message, callers int) (time.Duration, error) {
	const chunk = 1000
	var next atomic.Int64
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range callers {
		g.Go(func() error {
			for {
				i := int(next.Add(chunk)) - chunk
				if i >= len(msgs) {
					return nil
				}
				if err := w.WriteMessages(gctx, msgs[i:min(i+chunk, len(msgs))]...); err != nil {
					return fmt.Errorf("produce: %w", err)
				}
			}
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

func runRelay(ctx context.Context, e *env) (*section, error) {
	n := e.scale.relayEvents
	db, err := e.pg.newDatabase(ctx, e.name("w2"), 8)
	if err != nil {
		return nil, err
	}
	defer db.Drop(ctx)
	relayTopic, rawTopic := e.name("w2", "relay"), e.name("w2", "raw")
	for _, t := range []string{relayTopic, rawTopic} {
		if err := e.kafka.createTopic(ctx, t); err != nil {
			return nil, err
		}
	}
	app, err := openApp(ctx, db.dsn, relayTopic, e.log)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	const perAccount = 100
	fillStart := time.Now()
	if err := fillOutbox(ctx, app, n, perAccount); err != nil {
		return nil, err
	}
	e.say("  filled the outbox with %d events in %s", n, time.Since(fillStart).Round(time.Millisecond))
	box := app.Outbox()

	// Raw limit: the same messages, read from the outbox up front, sent by
	// a plain kafka-go Writer with four concurrent callers.
	msgs, err := box.Fetch(ctx, outbox.Shard{}, n)
	if err != nil {
		return nil, err
	}
	if len(msgs) != n {
		return nil, fmt.Errorf("outbox holds %d messages, want %d", len(msgs), n)
	}
	w := e.kafka.writer()
	rawTook, err := produce(ctx, w, kafkaMessages(msgs, rawTopic), 4)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	rawRate := float64(n) / rawTook.Seconds()

	// The relay as cmd/relay wires it: kafkapub with its defaults, the
	// outbox's advisory lock and LISTEN/NOTIFY wake-ups, batches of 1000.
	pub, err := kafkapub.New(kafkapub.Config{Brokers: e.kafka.brokers, ClientID: "esbench-relay", AutoCreateTopics: true, Partitions: partitions})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	var published atomic.Int64
	drained := make(chan struct{})
	var once sync.Once
	r, err := relay.New(box, pub, relay.Config{
		BatchSize: 1000, Locker: box, Waker: box, Logger: e.log,
		Hooks: relay.Hooks{Published: func(k int, _, _ time.Duration) {
			if published.Add(int64(k)) >= int64(n) {
				once.Do(func() { close(drained) })
			}
		}},
	})
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(rctx) }()
	var relayTook time.Duration
	select {
	case <-drained:
		relayTook = time.Since(start)
	case err := <-done:
		stop()
		return nil, fmt.Errorf("relay stopped: %v", err)
	case <-time.After(5 * time.Minute):
		stop()
		<-done
		return nil, errors.New("relay did not drain the backlog in 5 minutes")
	}
	stop()
	if err := <-done; err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	left, err := box.Backlog(ctx, outbox.Shard{})
	if err != nil {
		return nil, err
	}
	if left.Messages != 0 {
		return nil, fmt.Errorf("%d messages left in the outbox", left.Messages)
	}
	relayRate := float64(n) / relayTook.Seconds()
	ratio := relayRate / rawRate

	sec := &section{setup: []string{
		fmt.Sprintf("A backlog of %d outbox rows (accounts of %d events, outbox value %d B) is drained by `relay.Relay` with `kafkapub.Publisher` as `cmd/relay` wires them (batch 1000, advisory lock, LISTEN/NOTIFY wake-up, kafkapub defaults: acks=all, one produce request per broker per batch), from its start until every message was acknowledged and deleted.", n, perAccount, len(msgs[0].Value)),
		"Raw limit: the same messages, read from the outbox beforehand, written by a plain kafka-go `Writer` (acks=all, batch 1000, 2 ms batch timeout) with 4 concurrent callers of 1000 messages, into another topic; no database work.",
	}}
	t := table{header: []string{"events", "relay events/s", "raw kafka-go events/s", "ratio"}}
	t.add(fmt.Sprint(n), rate(relayRate), rate(rawRate), fmt.Sprintf("%.2f", ratio))
	sec.tables = append(sec.tables, t)
	sec.checks = append(sec.checks,
		check{what: "relay drain rate", measured: rate(relayRate) + " events/s", target: "≥ 150k events/s", pass: relayRate >= 150_000},
		check{what: "relay / raw kafka-go producer", measured: fmt.Sprintf("%.2f× (%s vs %s events/s)", ratio, rate(relayRate), rate(rawRate)), target: "≥ 0.50×", pass: ratio >= 0.5},
	)
	return sec, nil
}
