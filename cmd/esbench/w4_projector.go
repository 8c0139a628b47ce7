package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

// publishedEvents builds the messages the relay would publish for n events:
// accounts of perAccount events, each account's events in version order.
func publishedEvents(n, perAccount int, topic string) ([]kafka.Message, error) {
	var events []aggregate.Event
	for len(events) < n {
		a, err := newAccount()
		if err != nil {
			return nil, err
		}
		if err := a.record(min(perAccount, n-len(events)) - 1); err != nil {
			return nil, err
		}
		events = append(events, a.PendingEvents()...)
	}
	b := outbox.Builder{Router: router(topic)}
	msgs, err := b.Messages(events, nil, false)
	if err != nil {
		return nil, err
	}
	return kafkaMessages(msgs, topic), nil
}

func runProjector(ctx context.Context, e *env) (*section, error) {
	n, perAccount := e.scale.projEvents, e.scale.projPerAccount
	topic := e.name("w4")
	if err := e.kafka.createTopic(ctx, topic); err != nil {
		return nil, err
	}
	msgs, err := publishedEvents(n, perAccount, topic)
	if err != nil {
		return nil, err
	}
	// One caller, so each account's events keep their order.
	w := e.kafka.writer()
	_, err = produce(ctx, w, msgs, 1)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}

	// Raw limit: a plain kafka-go consumer reading the same messages, no
	// database.
	rd := e.kafka.reader(e.name("w4", "raw"), topic)
	rawStart := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	for i := range n {
		if _, err := rd.ReadMessage(rctx); err != nil {
			cancel()
			_ = rd.Close()
			return nil, fmt.Errorf("raw consumer after %d messages: %w", i, err)
		}
	}
	rawTook := time.Since(rawStart)
	cancel()
	if err := rd.Close(); err != nil {
		return nil, err
	}

	db, err := e.pg.newDatabase(ctx, e.name("w4_rm"), 8)
	if err != nil {
		return nil, err
	}
	defer db.Drop(ctx)
	pool, err := db.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	runner, err := projection.NewRunner(projection.NewPostgres(pool), &ledger{name: "esbench_w4", topic: topic},
		projection.RunnerConfig{Brokers: e.kafka.brokers, GroupID: e.name("w4", "projector"), Logger: e.log})
	if err != nil {
		return nil, err
	}
	if err := runner.Setup(ctx); err != nil {
		return nil, err
	}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- runner.Run(pctx) }()
	var took time.Duration
	deadline := time.After(5 * time.Minute)
wait:
	for {
		select {
		case err := <-done:
			stop()
			return nil, fmt.Errorf("runner stopped after %d events: %v", runner.Status().Applied, err)
		case <-deadline:
			stop()
			<-done
			return nil, errors.New("runner did not apply every event in 5 minutes")
		case <-time.After(2 * time.Millisecond):
			if runner.Status().Applied >= uint64(n) {
				took = time.Since(start)
				break wait
			}
		}
	}
	stop()
	if err := <-done; err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	var rows, lines int64
	if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(lines), 0) FROM ledger`).Scan(&rows, &lines); err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	if lines != int64(n) {
		return nil, fmt.Errorf("read model counts %d lines, want %d", lines, n)
	}
	projRate, rawRate := float64(n)/took.Seconds(), float64(n)/rawTook.Seconds()

	sec := &section{setup: []string{
		fmt.Sprintf("%d events (%d accounts of %d, published beforehand as the relay publishes them) are applied by a `projection.Runner` (defaults: batches of up to 500, commit every 1 s) with the ledger projection (one multi-row upsert per batch) and its tracking rows on PostgreSQL; timed from `Run` until `Status().Applied` reached %d.", n, rows, perAccount, n),
		"For scale: a plain kafka-go consumer in a group reading the same messages, with no database work (the Kafka side's limit, not a like-for-like projector).",
	}}
	t := table{header: []string{"events", "projector events/s", "plain consumer events/s", "ratio"}}
	t.add(fmt.Sprint(n), rate(projRate), rate(rawRate), fmt.Sprintf("%.2f", projRate/rawRate))
	sec.tables = append(sec.tables, t)
	sec.checks = append(sec.checks, check{what: "projector drain with tracking", measured: rate(projRate) + " events/s", target: "≥ 30k events/s", pass: projRate >= 30_000})
	return sec, nil
}
