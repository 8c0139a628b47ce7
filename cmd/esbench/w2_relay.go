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

	"github.com/esflow/esflow/internal/proccpu"
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

// perAccount is the number of events of each account W2 saves.
const perAccount = 100

// relayRounds is how often W2 drains the backlog, and how often the raw
// producer sends it: the two alternate, and the report gives the median
// of each (single drains of ~1 s on 2 cores varied by ±20 %).
const relayRounds = 3

func runRelay(ctx context.Context, e *env) (*section, error) {
	n := e.scale.relayEvents
	db, err := e.pg.newDatabase(ctx, e.name("w2"), 8)
	if err != nil {
		return nil, err
	}
	defer db.Drop(ctx)
	pub, err := kafkapub.New(kafkapub.Config{Brokers: e.kafka.brokers, ClientID: "esbench-relay", AutoCreateTopics: true, Partitions: partitions})
	if err != nil {
		return nil, err
	}
	defer pub.Close()

	// The WAL mode drains the same workload from a replication slot, on a
	// database of its own, in the same rounds.
	var walDB *database
	if pool, err := db.pool(ctx); err != nil {
		return nil, err
	} else {
		ok, err := logicalWAL(ctx, pool)
		pool.Close()
		if err != nil {
			return nil, err
		}
		if ok {
			if walDB, err = e.pg.newDatabase(ctx, e.name("w2_wal"), 8); err != nil {
				return nil, err
			}
			defer walDB.Drop(ctx)
		}
	}

	var relayRates, rawRates, walRates []float64
	var relayCPU, rawCPU, walCPU []cpuSplit
	var valueSize int
	for round := range relayRounds {
		relaySide, rawSide, walSide, size, err := relayRound(ctx, e, db, walDB, pub, round)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", round+1, err)
		}
		relayRates, rawRates, valueSize = append(relayRates, relaySide.rate), append(rawRates, rawSide.rate), size
		relayCPU, rawCPU = append(relayCPU, relaySide.cpu), append(rawCPU, rawSide.cpu)
		e.say("  round %d: relay %s/s, raw %s/s", round+1, rate(relaySide.rate), rate(rawSide.rate))
		if walDB != nil {
			walRates, walCPU = append(walRates, walSide.rate), append(walCPU, walSide.cpu)
			e.say("  round %d: WAL-mode relay %s/s", round+1, rate(walSide.rate))
		}
	}
	relayRate, rawRate := median(relayRates), median(rawRates)
	ratio := relayRate / rawRate

	sec := &section{setup: []string{
		fmt.Sprintf("A backlog of %d outbox rows (accounts of %d events, outbox value %d B) is drained by `relay.Relay` with `kafkapub.Publisher` as `cmd/relay` wires them (relay defaults: batches of up to %d, advisory lock, LISTEN/NOTIFY wake-up; kafkapub defaults: acks=all, one produce request per broker per round), from its start until every message was acknowledged and deleted.", n, perAccount, valueSize, relay.DefaultBatchSize),
		"Raw limit: the same messages, read from the outbox beforehand, written by a plain kafka-go `Writer` (acks=all, batch 1000, 2 ms batch timeout) with 4 concurrent callers of 1000 messages, into another topic; no database work.",
		fmt.Sprintf("%d rounds, each with topics of its own (deleted after it: the embedded broker keeps records in memory), refilling the outbox, running VACUUM ANALYZE on the outbox and events tables (so that each round starts from the same state and no autovacuum falls into the drain), then the raw send, then the relay's drain; the table gives each side's median and its range.", relayRounds),
	}}
	t := table{header: []string{"events", "relay events/s", "raw kafka-go events/s", "ratio of medians", "WAL-mode relay events/s", "WAL / raw"}}
	walCol, walRatio := "-", "-"
	if len(walRates) > 0 {
		walCol, walRatio = spread(walRates), fmt.Sprintf("%.2f", median(walRates)/rawRate)
	}
	t.add(fmt.Sprint(n), spread(relayRates), spread(rawRates), fmt.Sprintf("%.2f", ratio), walCol, walRatio)
	sec.tables = append(sec.tables, t)
	ct := table{header: []string{"CPU µs per event (median of rounds)", "esbench process", "PostgreSQL", "broker process", "total"}}
	ct.add(cpuRow("relay drain", relayCPU)...)
	if len(walCPU) > 0 {
		ct.add(cpuRow("WAL-mode relay drain", walCPU)...)
	}
	ct.add(cpuRow("raw producer", rawCPU)...)
	sec.tables = append(sec.tables, ct)
	if len(walRates) > 0 {
		sec.setup = append(sec.setup, "WAL mode: the same backlog written by an application with `OutboxMode: wal` (logical-decoding messages, no outbox rows) into a database of its own while no relay runs, so the replication slot holds it; then drained by the same relay and publisher over `WALSource` (pgoutput from the slot; the confirmed position advances as batches are acknowledged), into a topic of its own, in each round after the table mode's drain.")
		wr := median(walRates) / rawRate
		sec.checks = append(sec.checks, check{what: "WAL-mode relay / raw kafka-go producer", measured: fmt.Sprintf("%.2f× (%s vs %s events/s, medians)", wr, rate(median(walRates)), rate(rawRate)), target: "≥ 0.80×", pass: wr >= 0.8})
	}
	sec.setup = append(sec.setup, "CPU per event: user plus system time while each side ran, of this process (the relay, or the raw producer), of all PostgreSQL server processes (/proc), and of the broker process, divided by the events moved. Two cores give 2,000,000 µs per second, so a side that keeps both busy runs at about 2,000,000 / total events/s.")
	sec.checks = append(sec.checks,
		check{what: "relay drain rate", measured: rate(relayRate) + " events/s (median)", target: "≥ 150k events/s", pass: relayRate >= 150_000},
		check{what: "relay / raw kafka-go producer", measured: fmt.Sprintf("%.2f× (%s vs %s events/s, medians)", ratio, rate(relayRate), rate(rawRate)), target: "≥ 0.50×", pass: ratio >= 0.5},
	)
	return sec, nil
}

// relayRound fills the outbox with the workload's events, sends them with
// the raw producer, then drains them with the relay, each into a topic of
// the round's own, and returns both rates and the size of an outbox
// value.
func relayRound(ctx context.Context, e *env, db, walDB *database, pub relay.Publisher, round int) (relaySide, rawSide, walSide relayRun, valueSize int, err error) {
	relayTopic, walTopic := e.name("w2", "relay", fmt.Sprint(round)), e.name("w2", "wal", fmt.Sprint(round))
	relaySide, rawSide, valueSize, err = relayRoundTable(ctx, e, db, pub, round, relayTopic)
	if err != nil || walDB == nil {
		return relaySide, rawSide, walSide, valueSize, err
	}
	if err := e.kafka.createTopic(ctx, walTopic); err != nil {
		return relaySide, rawSide, walSide, valueSize, err
	}
	defer func() { err = errors.Join(err, e.kafka.deleteTopic(ctx, walTopic)) }()
	app, err := openAppMode(ctx, walDB.dsn, walTopic, e.log, application.OutboxWAL)
	if err != nil {
		return relaySide, rawSide, walSide, valueSize, err
	}
	defer func() { err = errors.Join(err, app.Close()) }()
	n := e.scale.relayEvents
	fillStart := time.Now()
	if err := fillOutbox(ctx, app, n, perAccount); err != nil {
		return relaySide, rawSide, walSide, valueSize, err
	}
	e.say("  round %d: filled the slot with %d events in %s", round+1, n, time.Since(fillStart).Round(time.Millisecond))
	c0 := e.cpu()
	took, err := drain(ctx, app.Outbox(), pub, n, e)
	cpu := e.cpu().sub(c0)
	if err != nil {
		return relaySide, rawSide, walSide, valueSize, fmt.Errorf("WAL mode: %w", err)
	}
	return relaySide, rawSide, relayRun{float64(n) / took.Seconds(), cpu.per(n)}, valueSize, nil
}

func relayRoundTable(ctx context.Context, e *env, db *database, pub relay.Publisher, round int, relayTopic string) (relaySide, rawSide relayRun, valueSize int, err error) {
	n := e.scale.relayEvents
	rawTopic := e.name("w2", "raw", fmt.Sprint(round))
	for _, t := range []string{relayTopic, rawTopic} {
		if err := e.kafka.createTopic(ctx, t); err != nil {
			return relayRun{}, relayRun{}, 0, err
		}
	}
	// Deleted after the round: see deleteTopic.
	defer func() {
		for _, t := range []string{relayTopic, rawTopic} {
			err = errors.Join(err, e.kafka.deleteTopic(ctx, t))
		}
	}()
	app, err := openApp(ctx, db.dsn, relayTopic, e.log)
	if err != nil {
		return relayRun{}, relayRun{}, 0, err
	}
	defer func() { err = errors.Join(err, app.Close()) }()
	box := app.Outbox()

	fillStart := time.Now()
	if err := fillOutbox(ctx, app, n, perAccount); err != nil {
		return relayRun{}, relayRun{}, 0, err
	}
	e.say("  round %d: filled the outbox with %d events in %s", round+1, n, time.Since(fillStart).Round(time.Millisecond))
	// Every round starts from the same state: the previous round's
	// deleted rows vacuumed away, and no autovacuum of the fill (100,000
	// inserts cross its thresholds) due during the drain.
	if err := vacuum(ctx, db); err != nil {
		return relayRun{}, relayRun{}, 0, err
	}

	// Raw limit: the same messages, read from the outbox up front, sent by
	// a plain kafka-go Writer with four concurrent callers.
	msgs, err := box.Fetch(ctx, outbox.Shard{}, n)
	if err != nil {
		return relayRun{}, relayRun{}, 0, err
	}
	if len(msgs) != n {
		return relayRun{}, relayRun{}, 0, fmt.Errorf("outbox holds %d messages, want %d", len(msgs), n)
	}
	kmsgs := kafkaMessages(msgs, rawTopic)
	w := e.kafka.writer()
	c0 := e.cpu()
	rawTook, err := produce(ctx, w, kmsgs, 4)
	rawCPU := e.cpu().sub(c0)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return relayRun{}, relayRun{}, 0, err
	}
	c0 = e.cpu()
	relayTook, err := drain(ctx, box, pub, n, e)
	relayCPU := e.cpu().sub(c0)
	if err != nil {
		return relayRun{}, relayRun{}, 0, err
	}
	return relayRun{float64(n) / relayTook.Seconds(), relayCPU.per(n)}, relayRun{float64(n) / rawTook.Seconds(), rawCPU.per(n)}, len(msgs[0].Value), nil
}

// relayRun is one side of one W2 round: its rate and the CPU per event of
// each process group while it ran.
type relayRun struct {
	rate float64
	cpu  cpuSplit
}

// vacuum runs VACUUM ANALYZE on the outbox and events tables of db.
func vacuum(ctx context.Context, db *database) error {
	pool, err := db.pool(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `VACUUM (ANALYZE) esflow_outbox, events`); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

// drain runs a relay as cmd/relay wires it (the outbox's advisory lock
// and LISTEN/NOTIFY wake-ups, the default batch size) until it has
// published n messages, returns how long that took, and checks that the
// outbox is empty.
func drain(ctx context.Context, box application.Outbox, pub relay.Publisher, n int, e *env) (time.Duration, error) {
	var published atomic.Int64
	drained := make(chan struct{})
	var once sync.Once
	r, err := relay.New(box, pub, relay.Config{
		Locker: box, Waker: box, Logger: e.log,
		Hooks: relay.Hooks{Published: func(k int, _, _ time.Duration) {
			if published.Add(int64(k)) >= int64(n) {
				once.Do(func() { close(drained) })
			}
		}},
	})
	if err != nil {
		return 0, err
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- r.Run(rctx) }()
	var took time.Duration
	select {
	case <-drained:
		took = time.Since(start)
	case err := <-done:
		return 0, fmt.Errorf("relay stopped: %v", err)
	case <-time.After(5 * time.Minute):
		stop()
		<-done
		return 0, errors.New("relay did not drain the backlog in 5 minutes")
	}
	stop()
	if err := <-done; err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	left, err := box.Backlog(ctx, outbox.Shard{})
	if err != nil {
		return 0, err
	}
	if left.Messages != 0 {
		return 0, fmt.Errorf("%d messages left in the outbox", left.Messages)
	}
	return took, nil
}

// cpuSplit is CPU time (or CPU time per event) by process group.
type cpuSplit struct{ self, pg, broker time.Duration }

// cpuMark is the CPU time used so far, with the PostgreSQL processes'
// times kept by process id (see proccpu.Group.Since).
type cpuMark struct {
	self, broker time.Duration
	pg           proccpu.Group
}

// sub is the CPU used between d and c.
func (c cpuMark) sub(d cpuMark) cpuSplit {
	return cpuSplit{c.self - d.self, c.pg.Since(d.pg), c.broker - d.broker}
}

func (c cpuSplit) per(n int) cpuSplit {
	if n <= 0 {
		return cpuSplit{}
	}
	d := time.Duration(n)
	return cpuSplit{c.self / d, c.pg / d, c.broker / d}
}

// cpuRow is a table row of the medians of splits, in µs per event.
func cpuRow(name string, splits []cpuSplit) []string {
	var self, pg, broker, total []float64
	for _, c := range splits {
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		self, pg, broker = append(self, us(c.self)), append(pg, us(c.pg)), append(broker, us(c.broker))
		total = append(total, us(c.self+c.pg+c.broker))
	}
	f := func(xs []float64) string { return fmt.Sprintf("%.1f", median(xs)) }
	return []string{name, f(self), f(pg), f(broker), f(total)}
}
