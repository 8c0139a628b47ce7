package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// stamps records the first time each account was seen.
type stamps struct {
	mu sync.Mutex
	m  map[uuid.UUID]time.Time
}

func newStamps() *stamps { return &stamps{m: map[uuid.UUID]time.Time{}} }

func (s *stamps) set(id uuid.UUID, t time.Time) {
	s.mu.Lock()
	if _, ok := s.m[id]; !ok {
		s.m[id] = t
	}
	s.mu.Unlock()
}

func (s *stamps) has(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[id]
	return ok
}

func (s *stamps) snapshot() map[uuid.UUID]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// quantiles of sorted latencies.
type quantiles struct {
	n                   int
	p50, p95, p99, pmax time.Duration
}

func quantilesOf(sorted []time.Duration) quantiles {
	if len(sorted) == 0 {
		return quantiles{}
	}
	at := func(p float64) time.Duration {
		i := int(p*float64(len(sorted))+0.5) - 1
		return sorted[min(max(i, 0), len(sorted)-1)]
	}
	return quantiles{n: len(sorted), p50: at(0.50), p95: at(0.95), p99: at(0.99), pmax: sorted[len(sorted)-1]}
}

// latencies joins commit times with arrival times; missing arrivals are
// counted, early ones (an arrival stamped before the writer stamped its
// commit) count as zero.
func latencies(commits, arrivals map[uuid.UUID]time.Time) ([]time.Duration, int) {
	out := make([]time.Duration, 0, len(commits))
	missing := 0
	for id, c := range commits {
		a, ok := arrivals[id]
		if !ok {
			missing++
			continue
		}
		out = append(out, max(a.Sub(c), 0))
	}
	slices.Sort(out)
	return out, missing
}

// latResult is one W3 run.
type latResult struct {
	mode                    application.OutboxMode
	saves, behind           int
	steady                  time.Duration
	kafkaLat, rmLat         []time.Duration
	kafkaMissing, rmMissing int
	kq, rq                  quantiles
}

func runLatency(ctx context.Context, e *env) (*section, error) {
	modes := []application.OutboxMode{application.OutboxTable}
	if ok, err := e.pg.logical(ctx); err != nil {
		return nil, err
	} else if ok {
		modes = append(modes, application.OutboxWAL)
	}
	var runs []*latResult
	for _, mode := range modes {
		r, err := latencyRun(ctx, e, mode)
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", mode, err)
		}
		e.say("  %s mode: commit → consumer p50 %s p99 %s ms; → read model p99 %s ms", mode, ms(r.kq.p50), ms(r.kq.p99), ms(r.rq.p99))
		runs = append(runs, r)
	}
	sc := e.scale
	first := runs[0]
	sec := &section{setup: []string{
		fmt.Sprintf("%d saves of a new account (one event each) at %d events/s for %s (achieved %.0f/s; %d sends more than one interval late), from 4 writers on a fixed schedule, through the full save path with the outbox.", first.saves, sc.latRate, sc.latTime, float64(first.saves)/first.steady.Seconds(), first.behind),
		"Running meanwhile, as the services wire them: the relay (kafkapub, LISTEN/NOTIFY wake-up); a kafka-go consumer in its own group (long-polling fetches: MinBytes 1, MaxWait 250 ms; commit every 1 s); a `projection.Runner` with a small ledger projection (one multi-row upsert per batch, tracking in the same transaction) on another PostgreSQL database, all in this process.",
		"Commit = when `app.Save` returned. Receipt = when the consumer's `ReadMessage` returned the event. Visible = when the runner's `Hooks.Applied` reported the commit of the transaction holding the event.",
	}}
	if len(runs) > 1 {
		sec.setup = append(sec.setup, "WAL mode: the same run after the table mode's, on fresh databases, with `OutboxMode: wal`: the writer emits logical-decoding messages and the relay streams them from the replication slot (it wakes on the decoded commit itself; no NOTIFY, no fetch query).")
	}
	t := table{header: []string{"outbox mode", "path", "events", "missing", "p50 ms", "p95 ms", "p99 ms", "max ms", "p99 target"}}
	var lines []series
	for i, r := range runs {
		kq, rq := r.kq, r.rq
		kt := "≤ 8 ms"
		kLimit := 8 * time.Millisecond
		if r.mode == application.OutboxWAL {
			kt, kLimit = "≤ 5 ms", 5*time.Millisecond
		}
		t.add(string(r.mode), "commit → Kafka consumer", fmt.Sprint(kq.n), fmt.Sprint(r.kafkaMissing), ms(kq.p50), ms(kq.p95), ms(kq.p99), ms(kq.pmax), kt)
		t.add(string(r.mode), "commit → read model", fmt.Sprint(rq.n), fmt.Sprint(r.rmMissing), ms(rq.p50), ms(rq.p95), ms(rq.p99), ms(rq.pmax), "≤ 25 ms")
		sec.checks = append(sec.checks,
			check{what: string(r.mode) + " mode: commit → Kafka consumer p99", measured: ms(kq.p99) + " ms", target: kt, pass: kq.n > 0 && r.kafkaMissing == 0 && kq.p99 <= kLimit},
			check{what: string(r.mode) + " mode: commit → read model p99", measured: ms(rq.p99) + " ms", target: "≤ 25 ms", pass: rq.n > 0 && r.rmMissing == 0 && rq.p99 <= 25*time.Millisecond},
		)
		if r.kafkaMissing+r.rmMissing > 0 {
			sec.notes = append(sec.notes, fmt.Sprintf("%s mode: %d events never reached the consumer and %d never the read model within 30 s of the last save; the targets count as missed.", r.mode, r.kafkaMissing, r.rmMissing))
		}
		lines = append(lines,
			series{name: string(r.mode) + ": commit → Kafka consumer", points: cdf(r.kafkaLat), noDots: true, color: palette[i]},
			series{name: string(r.mode) + ": commit → read model", points: cdf(r.rmLat), noDots: true, dashed: true, color: palette[i]})
	}
	sec.tables = append(sec.tables, t)
	svg := lineChart(chart{
		title: fmt.Sprintf("W3: latency CDF at %d events/s", sc.latRate), xLabel: "latency, ms (log scale)", yLabel: "fraction of events",
		xLog: true, yMax: 1, yFormat: func(v float64) string { return fmt.Sprintf("%.1f", v) },
		series: lines,
	})
	sec.plots = append(sec.plots, plot{file: "w3-latency-cdf.svg", title: "W3 latency distributions (CDF)", svg: svg})
	return sec, nil
}

// latencyRun is one W3 run with the outbox in mode.
func latencyRun(ctx context.Context, e *env, mode application.OutboxMode) (*latResult, error) {
	sc := e.scale
	db, err := e.pg.newDatabase(ctx, e.name("w3", string(mode)), 8)
	if err != nil {
		return nil, err
	}
	defer db.Drop(ctx)
	rmDB, err := e.pg.newDatabase(ctx, e.name("w3_rm", string(mode)), 8)
	if err != nil {
		return nil, err
	}
	defer rmDB.Drop(ctx)
	topic := e.name("w3", string(mode))
	if err := e.kafka.createTopic(ctx, topic); err != nil {
		return nil, err
	}
	app, err := openAppMode(ctx, db.dsn, topic, e.log, mode)
	if err != nil {
		return nil, err
	}
	defer app.Close()
	box := app.Outbox()
	rmPool, err := rmDB.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer rmPool.Close()

	pub, err := kafkapub.New(kafkapub.Config{Brokers: e.kafka.brokers, ClientID: "esbench-relay", AutoCreateTopics: true, Partitions: partitions})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	rl, err := relay.New(box, pub, relay.Config{BatchSize: 1000, Locker: box, Waker: box, Logger: e.log})
	if err != nil {
		return nil, err
	}
	vis := newVisibility()
	runner, err := projection.NewRunner(projection.NewPostgres(rmPool), &ledger{name: "esbench_w3_" + string(mode), topic: topic, seen: vis.seen},
		projection.RunnerConfig{Brokers: e.kafka.brokers, Hooks: vis, Logger: e.log})
	if err != nil {
		return nil, err
	}
	received := newStamps()
	rd := e.kafka.reader(e.name("w3", string(mode), "consumer"), topic)

	bg, bgctx := errgroup.WithContext(ctx)
	bgctx, stopBG := context.WithCancel(bgctx)
	bg.Go(func() error { return rl.Run(bgctx) })
	bg.Go(func() error { return runner.Run(bgctx) })
	bg.Go(func() error {
		for {
			m, err := rd.ReadMessage(bgctx)
			if err != nil {
				if bgctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("consumer: %w", err)
			}
			now := time.Now()
			env, err := outbox.DecodeEnvelope(m.Value)
			if err != nil {
				return fmt.Errorf("consumer: %w", err)
			}
			received.set(env.AggregateID, now)
		}
	})
	stopAll := func() error {
		stopBG()
		return errors.Join(bg.Wait(), rd.Close())
	}

	// Warm up until the consumer group and the runner have joined and see
	// new saves.
	warmDeadline := time.Now().Add(60 * time.Second)
	for {
		a, err := newAccount()
		if err != nil {
			return nil, errors.Join(err, stopAll())
		}
		if err := app.Save(ctx, a); err != nil {
			return nil, errors.Join(err, stopAll())
		}
		ok := false
		for range 50 {
			if received.has(a.ID()) && vis.has(a.ID()) {
				ok = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if ok {
			break
		}
		if time.Now().After(warmDeadline) || bgctx.Err() != nil {
			return nil, errors.Join(errors.New("consumer or read model saw nothing within 60s"), stopAll())
		}
	}

	// The steady phase: one new account (one event) per save, on a fixed
	// schedule, from a few writers so that one slow commit does not delay
	// the next.
	total := int(float64(sc.latRate) * sc.latTime.Seconds())
	interval := time.Second / time.Duration(sc.latRate)
	commits := newStamps()
	jobs := make(chan struct{}, total)
	wg, wctx := errgroup.WithContext(ctx)
	for range 4 {
		wg.Go(func() error {
			for range jobs {
				a, err := newAccount()
				if err != nil {
					return err
				}
				if err := app.Save(wctx, a); err != nil {
					return fmt.Errorf("save: %w", err)
				}
				commits.set(a.ID(), time.Now())
			}
			return nil
		})
	}
	start := time.Now()
	behind := 0
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		} else if d < -interval {
			behind++
		}
		jobs <- struct{}{}
	}
	close(jobs)
	if err := wg.Wait(); err != nil {
		return nil, errors.Join(err, stopAll())
	}
	steady := time.Since(start)
	cm := commits.snapshot()
	waitDeadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(waitDeadline) {
		r, v := received.snapshot(), vis.snapshot()
		all := true
		for id := range cm {
			if _, ok := r[id]; !ok {
				all = false
				break
			}
			if _, ok := v[id]; !ok {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stopAll(); err != nil {
		return nil, err
	}
	kafkaLat, kafkaMissing := latencies(cm, received.snapshot())
	rmLat, rmMissing := latencies(cm, vis.snapshot())
	return &latResult{
		mode: mode, saves: len(cm), behind: behind, steady: steady,
		kafkaLat: kafkaLat, rmLat: rmLat, kafkaMissing: kafkaMissing, rmMissing: rmMissing,
		kq: quantilesOf(kafkaLat), rq: quantilesOf(rmLat),
	}, nil
}

// cdf samples the empirical distribution of sorted latencies (in ms) at up
// to 300 points (below 0.1 ms drawn at 0.1 ms).
func cdf(sorted []time.Duration) []xy {
	if len(sorted) == 0 {
		return nil
	}
	step := max(1, len(sorted)/300)
	var out []xy
	for i := 0; i < len(sorted); i += step {
		out = append(out, xy{max(float64(sorted[i])/float64(time.Millisecond), 0.1), float64(i+1) / float64(len(sorted))})
	}
	last := sorted[len(sorted)-1]
	return append(out, xy{max(float64(last)/float64(time.Millisecond), 0.1), 1})
}
