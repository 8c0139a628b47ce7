package integration

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/integration/suite"
	"github.com/esflow/esflow/internal/proctest"
)

// faultsConfig sizes a run of TestFaults. The defaults fit CI (about
// four minutes on two cores); ESFLOW_SOAK=10m repeats the fault rounds
// for that long.
type faultsConfig struct {
	soak       time.Duration // 0: one round
	killCycles int           // kill -9 cycles of relay and of projector per round
	restarts   int           // rolling restarts (SIGTERM, start) of a projector per round
	rate       float64       // commands per second
	workers    int
	pause      time.Duration // SIGSTOP length
	outage     time.Duration // broker outage length
	// writeSideOnly skips the projector faults: the WAL outbox mode
	// changes nothing downstream of Kafka.
	writeSideOnly bool
	// projectorOnly runs the projector faults alone (ESFLOW_FAULTS=projector),
	// in the table mode: a quicker loop when working on the projectors.
	projectorOnly bool
}

func faultsConfigFromEnv(t *testing.T) faultsConfig {
	c := faultsConfig{killCycles: 20, restarts: 10, rate: 150, workers: 6, pause: 3 * time.Second, outage: 2 * time.Second}
	if s := os.Getenv("ESFLOW_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("ESFLOW_SOAK=%q: %v", s, err)
		}
		c.soak = d
	}
	switch f := os.Getenv("ESFLOW_FAULTS"); f {
	case "", "all":
	case "projector":
		c.projectorOnly = true
	default:
		t.Fatalf("ESFLOW_FAULTS=%q: want all or projector", f)
	}
	return c
}

// TestFaults is the end-to-end suite: writers under load, two relays,
// two projectors, all real processes, and an independent checker, while
// relays and projectors are killed with SIGKILL in a loop, projectors are
// restarted with SIGTERM (a rolling restart), processes are paused with
// SIGSTOP, PostgreSQL restarts with a fast shutdown and the broker stops
// and starts. At the end nothing may be lost, per-aggregate order must
// hold on Kafka, and the read models must equal what the event store
// implies (exactly-once effect). The projector faults are also timed
// from the read model's point of view (suite.Prober) and reported, not
// asserted.
//
// It runs once per PostgreSQL outbox mode: the table, and the WAL mode
// (logical-decoding messages from a replication slot) with the write-side
// faults only (relay kill loop, relay SIGSTOP, PostgreSQL restart, broker
// restart; the projectors do not see the mode) and a shorter kill loop,
// to keep the suite's time in bounds.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fault suite: not in -short")
	}
	for _, mode := range []string{"table", "wal"} {
		t.Run(mode, func(t *testing.T) {
			cfg := faultsConfigFromEnv(t)
			if cfg.projectorOnly && mode != "table" {
				t.Skip("ESFLOW_FAULTS=projector: the projector faults run in the table mode only")
			}
			if mode == "wal" {
				cfg.writeSideOnly = true
				if cfg.soak == 0 {
					cfg.killCycles = 8
				}
			}
			testFaults(t, mode, cfg)
		})
	}
}

func testFaults(t *testing.T, mode string, cfg faultsConfig) {
	began := time.Now()
	ctx := context.Background()
	say := func(format string, args ...any) {
		line := fmt.Sprintf("[%5.1fs] ", time.Since(began).Seconds()) + fmt.Sprintf(format, args...)
		t.Log(line)
		fmt.Printf("integration: %s\n", line)
	}

	env := suite.NewEnv(ctx, t)
	env.OutboxMode = mode
	say("environment: %s; outbox mode %s", env.Path, mode)

	bins := proctest.NewBuilds()
	t.Cleanup(bins.Close)
	b := suite.Binaries{
		Relay:     bins.Path(t, "github.com/esflow/esflow/cmd/relay"),
		Projector: bins.Path(t, "github.com/esflow/esflow/cmd/projector"),
		Writer:    bins.Path(t, "github.com/esflow/esflow/cmd/writer"),
	}
	p := suite.StartPipeline(ctx, t, env, b, 2)
	say("started %d cmd/writer, %d cmd/relay, %d cmd/projector processes in %s", len(p.Writers), len(p.Relays), len(p.Projectors),
		time.Since(began).Round(time.Millisecond))

	ld := suite.StartLoad(p.Clients, p.Ledger, cfg.workers, cfg.rate)
	defer ld.Stop()
	// First events all the way through: the pipeline works before any fault.
	time.Sleep(500 * time.Millisecond)
	if d, err := p.WaitCovered(ctx, suite.AtKafka|suite.InReadModel, p.Ledger.Snapshot(), time.Minute); err != nil {
		t.Fatalf("pipeline never delivered: %v", err)
	} else {
		say("warm-up: first %d commands end to end in %s", p.Ledger.Ops.Load(), d.Round(time.Millisecond))
	}

	prober, err := suite.NewProber(ctx, p.Clients[0], p.ReadPool(), p.Checker, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("probe worlds: %v", err)
	}
	var pt projectorTimes
	counts := map[string]int{}
	for round := 1; ; round++ {
		faultRound(t, ctx, p, cfg, counts, prober, &pt, say)
		if cfg.soak == 0 || time.Since(began) > cfg.soak {
			break
		}
		p.Recovery.Wait(5 * time.Minute)
		say("soak: round %d done after %s", round, time.Since(began).Round(time.Second))
	}

	// The concurrency check runs under the same load.
	con := suite.RunContention(ctx, p.Clients, 20, 8)
	ld.Stop()
	say("load stopped; waiting for the pipeline to deliver everything")
	minKills, minProjectorKills := cfg.killCycles, cfg.killCycles
	if cfg.writeSideOnly {
		minProjectorKills = 0
	}
	if cfg.projectorOnly {
		minKills = 0
	}
	verifyFaults(t, ctx, p, con, counts, minKills, minProjectorKills, &pt, say)
	say("runtime: %s", time.Since(began).Round(time.Millisecond))
}

// faultRound runs every fault kind once (the kill loops cfg.killCycles
// times), each followed by a background probe that times the recovery:
// from the moment the fault ends until every write acknowledged by then
// has reached Kafka (faults of the write side) or the read models.
func faultRound(t *testing.T, ctx context.Context, p *suite.Pipeline, cfg faultsConfig, counts map[string]int,
	prober *suite.Prober, pt *projectorTimes, say func(string, ...any)) {
	t.Helper()
	if !cfg.projectorOnly {
		writeSideFaults(t, ctx, p, cfg, counts, say)
	}
	if cfg.writeSideOnly {
		say("faults so far: %s", formatCounts(counts))
		return
	}
	projectorFaults(t, ctx, p, cfg, counts, prober, pt)
	say("faults so far: %s", formatCounts(counts))
}

// writeSideFaults kills and pauses the relays, restarts PostgreSQL and
// the broker, and pauses a projector.
func writeSideFaults(t *testing.T, ctx context.Context, p *suite.Pipeline, cfg faultsConfig, counts map[string]int, say func(string, ...any)) {
	t.Helper()
	// kill -9 of the relays in a loop, alternating (the active one or the
	// standby), each restarted at once as an orchestrator would.
	for i := range cfg.killCycles {
		r := p.Relays[i%len(p.Relays)]
		at, acked := time.Now(), p.Ledger.Snapshot()
		if err := r.Kill9(); err != nil {
			t.Fatal(err)
		}
		if err := r.Start(); err != nil {
			t.Fatal(err)
		}
		counts["relay kill -9"]++
		p.ProbeFrom("relay kill -9 (to Kafka)", suite.AtKafka, at, acked)
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
	}

	// SIGSTOP of the active relay: frozen for about its lease (3 s), it
	// may lose the shard to the other relay (PostgreSQL ends its silent
	// lock session); either way the checker verifies that it publishes
	// nothing stale when it resumes (pkg/relay/DESIGN.md, "Fencing").
	var active *suite.Service
	for deadline := time.Now().Add(30 * time.Second); active == nil && time.Now().Before(deadline); {
		if active = p.ActiveRelay(); active == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if active == nil {
		t.Fatal("no relay holds the shard lock 30s after the kill loop")
	}
	if err := suite.Pause(active, cfg.pause); err != nil {
		t.Fatal(err)
	}
	counts["relay SIGSTOP"]++
	p.Probe(fmt.Sprintf("relay SIGSTOP %s (to Kafka)", cfg.pause), suite.AtKafka)
	p.Recovery.Wait(5 * time.Minute)

	// PostgreSQL fast shutdown and start, under writes: writers, relays
	// and projectors all lose their connections.
	if p.Env.CanRestartPG() {
		down, err := p.Env.RestartPG(ctx)
		if err != nil {
			t.Fatalf("PostgreSQL restart: %v", err)
		}
		counts["PostgreSQL restart"]++
		say("PostgreSQL fast shutdown + start: down %s", down.Round(time.Millisecond))
		p.Probe("PostgreSQL restart (to read model)", suite.AtKafka|suite.InReadModel)
		p.Recovery.Wait(5 * time.Minute)
	}

	// SIGSTOP of a projector: once its heartbeat is older than the lease
	// TTL the other takes its partitions, and it wakes up believing it
	// still owns them (its transactions are fenced by the lease
	// generation).
	if !cfg.writeSideOnly {
		if err := suite.Pause(p.Projectors[0], cfg.pause); err != nil {
			t.Fatal(err)
		}
		counts["projector SIGSTOP"]++
		p.Probe(fmt.Sprintf("projector SIGSTOP %s (to read model)", cfg.pause), suite.InReadModel)
		p.Recovery.Wait(5 * time.Minute)
	}

	// Broker stop and start on the same address.
	switch {
	case p.Env.Embedded():
		// The embedded broker keeps nothing, so what it acknowledged
		// must be read before it goes: the relays are frozen meanwhile
		// (nothing new is acknowledged), the checker and the projectors
		// drain, then the relays resume against the dead broker while
		// the writers keep filling the outbox.
		for _, r := range p.Relays {
			if err := r.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Drain(ctx, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		addr := p.Env.Brokers
		p.Env.StopBroker()
		p.Checker.Stop()
		for _, r := range p.Relays {
			if err := r.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(cfg.outage)
		if err := p.Env.StartBroker(ctx, addr); err != nil {
			t.Fatal(err)
		}
		p.Checker.Start(addr)
	case p.Env.CanStopKafka(): // a container: it keeps its log across the restart
		if err := p.Env.StopStartKafka(ctx, cfg.outage); err != nil {
			t.Fatal(err)
		}
	}
	if p.Env.CanStopKafka() {
		counts["broker restart"]++
		p.Probe(fmt.Sprintf("broker down %s (to read model)", cfg.outage), suite.AtKafka|suite.InReadModel)
		p.Recovery.Wait(5 * time.Minute)
	}
}

// projectorFaults kills the projectors with SIGKILL in a loop, then
// restarts them with SIGTERM, then rolls them new-replica-first (surge),
// timing each from the read model's side.
func projectorFaults(t *testing.T, ctx context.Context, p *suite.Pipeline, cfg faultsConfig, counts map[string]int,
	prober *suite.Prober, pt *projectorTimes) {
	t.Helper()
	// kill -9 of the projectors in a loop, alternating, each restarted at
	// once; then rolling restarts (SIGTERM, start). The prober writes to
	// one world per partition meanwhile and times, per fault, how long
	// until the read model shows events written after it.
	// ESFLOW_FAULTS_TRACE=file collects the projectors' lease log lines
	// around the rolling restarts, for looking into a stall.
	trace := func(string, string) {}
	if path := os.Getenv("ESFLOW_FAULTS_TRACE"); path != "" {
		trace = func(name, out string) {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return
			}
			defer f.Close()
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "partition") || strings.Contains(line, "member") {
					fmt.Fprintf(f, "%s %s\n", name, line)
				}
			}
		}
	}
	prober.Start()
	quiet := time.Now()
	time.Sleep(5 * time.Second)
	base, baseKafka := prober.Latencies(quiet, time.Now())
	pt.baseline, pt.baselineKafka = append(pt.baseline, base...), append(pt.baselineKafka, baseKafka...)
	for i := range cfg.killCycles {
		pr := p.Projectors[i%len(p.Projectors)]
		at, acked := time.Now(), p.Ledger.Snapshot()
		if err := pr.Kill9(); err != nil {
			t.Fatal(err)
		}
		prober.Kick()
		if err := pr.Start(); err != nil {
			t.Fatal(err)
		}
		counts["projector kill -9"]++
		p.ProbeFrom("projector kill -9 (to read model)", suite.InReadModel, at, acked)
		if d, dk, ok := prober.CurrentAfter(at, time.Minute); ok {
			pt.failover = append(pt.failover, d)
			pt.failoverKafka = append(pt.failoverKafka, dk)
			t.Logf("projector kill -9 %d (%s) at %s: every partition current after %s (%s from Kafka)", i, pr.Name(), at.UTC().Format("15:04:05.000"),
				d.Round(time.Millisecond), dk.Round(time.Millisecond))
			for _, q := range p.Projectors {
				trace(q.Name(), q.Output())
			}
		} else {
			pt.failoverMissing++
		}
		// The next kill should find two replicas sharing the partitions:
		// wait for the restarted one (not a timing assertion: past the
		// bound the loop goes on).
		_ = pr.WaitHTTP(ctx, "/readyz", 30*time.Second)
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
	}
	for i := range cfg.restarts {
		pr := p.Projectors[i%len(p.Projectors)]
		at, acked := time.Now(), p.Ledger.Snapshot()
		if err := pr.Terminate(30 * time.Second); err != nil {
			t.Errorf("%s on SIGTERM: %v", pr.Name(), err)
		}
		exited := time.Since(at)
		stopped := suite.Incarnation{Name: pr.Name(), Output: pr.Output()}
		trace(pr.Name()+" (stopped)", stopped.Output)
		if err := pr.Start(); err != nil {
			t.Fatal(err)
		}
		counts["projector SIGTERM"]++
		p.ProbeFrom("projector rolling restart (to read model)", suite.InReadModel, at, acked)
		_ = pr.WaitHTTP(ctx, "/readyz", 30*time.Second)
		ready := time.Since(at)
		// The window ends a second after the restarted replica was handed
		// partitions of each projection (it joins after -join-delay).
		for _, name := range []string{"worlds", "examples", "event_counts"} {
			_ = pr.WaitOutput(ctx, `msg="partition acquired" projection=`+name+" ", 1, 30*time.Second)
		}
		time.Sleep(time.Second)
		end := time.Now()
		if d, dk, ok := prober.MaxLatency(at, end, time.Minute); ok {
			pt.stall = append(pt.stall, d)
			pt.stallKafka = append(pt.stallKafka, dk)
			hs := suite.HandOvers(&stopped, at, incarnations(p.Projectors), at, end)
			pt.handOvers = append(pt.handOvers, hs...)
			t.Logf("projector rolling restart %d (%s) at %s: exited +%s, restarted one ready +%s; max stall %s, %s from Kafka (%s); %s",
				i, pr.Name(), at.UTC().Format("15:04:05.000"), exited.Round(time.Millisecond), ready.Round(time.Millisecond),
				d.Round(time.Millisecond), dk.Round(time.Millisecond), prober.Worst(at, end), longestHandOver(hs))
			for _, q := range p.Projectors {
				trace(q.Name(), q.Output())
			}
		} else {
			pt.stallMissing++
		}
	}
	// Surge rolls, as deploy/k8s rolls the Deployment (maxSurge 1,
	// maxUnavailable 0): the new replica starts and joins before the old
	// one is stopped, so no replica carries every partition alone.
	for i := range cfg.restarts {
		k := i % len(p.Projectors)
		old := p.Projectors[k].Name()
		at := time.Now()
		ready, err := p.Surge(ctx, k)
		if err != nil {
			t.Fatalf("surge roll of %s: %v", old, err)
		}
		stopped := time.Since(at)
		counts["projector surge roll"]++
		// Recovery counted from the old one's exit: before it, two or three
		// replicas were serving all along.
		p.ProbeFrom("projector surge roll, from the old replica's exit (to read model)", suite.InReadModel, time.Now(), p.Ledger.Snapshot())
		time.Sleep(time.Second) // the others take the stopped replica's share
		end := time.Now()
		if d, dk, ok := prober.MaxLatency(at, end, time.Minute); ok {
			pt.surge = append(pt.surge, d)
			pt.surgeKafka = append(pt.surgeKafka, dk)
			// SIGTERM went to the old one as soon as the new one was ready.
			inc := suite.Incarnation{Name: p.SpareProjector.Name(), Output: p.SpareProjector.Output()}
			hs := suite.HandOvers(&inc, at.Add(ready), incarnations(p.Projectors), at, end)
			pt.surgeHandOvers = append(pt.surgeHandOvers, hs...)
			t.Logf("projector surge roll %d (%s replaced by %s) at %s: new one ready +%s, old one exited +%s; max stall %s, %s from Kafka (%s); %s",
				i, old, p.Projectors[k].Name(), at.UTC().Format("15:04:05.000"), ready.Round(time.Millisecond), stopped.Round(time.Millisecond),
				d.Round(time.Millisecond), dk.Round(time.Millisecond), prober.Worst(at, end), longestHandOver(hs))
			for _, q := range p.Projectors {
				trace(q.Name(), q.Output())
			}
			trace(p.SpareProjector.Name()+" (stopped)", p.SpareProjector.Output())
		} else {
			pt.stallMissing++
		}
	}
	prober.Stop()
}

// verifyFaults waits until the pipeline has delivered everything the
// store holds, then compares every view with the store and prints the
// summary.
func verifyFaults(t *testing.T, ctx context.Context, p *suite.Pipeline, con suite.Contention, counts map[string]int,
	minKills, minProjectorKills int, pt *projectorTimes, say func(string, ...any)) {
	t.Helper()
	var st *suite.StoreTruth
	var err error
	t0 := time.Now()
	for {
		if st, err = suite.ReadStore(ctx, p.Env.EventsURL); err != nil {
			t.Fatalf("read event store: %v", err)
		}
		want := map[uuid.UUID]uint64{}
		for id, vs := range st.Versions {
			want[id] = uint64(len(vs))
		}
		// A liveness bound, not a timing assertion: past it, whatever
		// has not arrived counts as lost below.
		if _, err = p.WaitCovered(ctx, suite.AtKafka|suite.InReadModel, want, 5*time.Minute); err != nil {
			t.Errorf("final convergence: %v", err)
			break
		}
		again, err := suite.ReadStore(ctx, p.Env.EventsURL)
		if err != nil {
			t.Fatalf("read event store: %v", err)
		}
		if again.Events == st.Events {
			break
		}
	}
	say("final convergence after the load stopped: %s", time.Since(t0).Round(time.Millisecond))
	p.Recovery.Wait(10 * time.Second) // probes whose target is now reached finish
	p.Recovery.Stop()

	// Let duplicates in flight land before counting.
	time.Sleep(500 * time.Millisecond)
	lost := 0
	for id, vs := range st.Versions {
		for _, v := range vs {
			if !p.Checker.Has(id, v) {
				lost++
			}
		}
	}
	backlog, err := p.Backlog(ctx)
	if err != nil {
		t.Errorf("outbox backlog: %v", err)
	}
	unacked := 0
	for id, v := range p.Ledger.Snapshot() {
		if w := st.Worlds[id]; w == nil || w.Version() < v {
			unacked++ // acknowledged to a client, missing in the store
		}
	}
	var mismatches int
	var bad []string
	for _, pr := range p.Projectors {
		n, first, err := suite.CompareReadModels(ctx, pr.Addr(), st)
		if err != nil {
			t.Errorf("read models via %s: %v", pr.Addr(), err)
		}
		mismatches += n
		bad = append(bad, first...)
	}
	received, dups, orderProblems, firstOrder := p.Checker.Stats()
	var exits []string
	for _, s := range p.Services() {
		exits = append(exits, s.Unexpected()...)
	}

	say("events written (in the store): %d in %d aggregates; commands acknowledged: %d; failed commands (retried): %d",
		st.Events, len(st.Versions), p.Ledger.Ops.Load(), p.Ledger.Errs.Load())
	say("published: %d messages read from Kafka, %d duplicates; lost: %d; outbox backlog: %d", received, dups, lost, backlog)
	say("per-aggregate order violations on Kafka: %d; acknowledged writes missing from the store: %d", orderProblems, unacked)
	say("read-model mismatches: %d (both projectors' HTTP APIs against the store)", mismatches)
	say("notification log: %d events; aggregates skipped, repeated or out of order in it: %d", st.Events, len(st.LogProblems))
	say("concurrency: %d rounds x %d concurrent writers on one aggregate: %d winners, %d conflicts (409), %d problems",
		con.Rounds, con.Clients, con.Wins, con.Conflicts, len(con.Problems))
	say("faults: %s", formatCounts(counts))
	for _, l := range p.Recovery.Lines() {
		say("%s", l)
	}
	for _, l := range pt.lines() {
		say("%s", l)
	}
	say("unexpected process exits (restarted): %d", len(exits))
	for _, e := range exits {
		t.Logf("unexpected exit: %s", e)
	}

	if lost != 0 || backlog != 0 {
		t.Errorf("lost %d events, backlog %d", lost, backlog)
	}
	if orderProblems != 0 {
		t.Errorf("%d order problems, first: %v", orderProblems, firstOrder)
	}
	if unacked != 0 {
		t.Errorf("%d acknowledged writes are not in the store", unacked)
	}
	if mismatches != 0 {
		t.Errorf("%d read-model mismatches, first: %v", mismatches, bad)
	}
	if len(st.LogProblems) != 0 {
		t.Errorf("notification log: %v", st.LogProblems)
	}
	if len(con.Problems) != 0 || con.Wins != con.Rounds || con.Conflicts != con.Rounds*(con.Clients-1) {
		t.Errorf("concurrency check: %d wins, %d conflicts; problems %v", con.Wins, con.Conflicts, con.Problems)
	}
	if w := st.Worlds[con.ID]; w == nil || w.Version() != uint64(con.Rounds)+1 {
		t.Errorf("contended aggregate %s: store version %v, want %d", con.ID, w, con.Rounds+1)
	}
	if counts["relay kill -9"] < minKills || counts["projector kill -9"] < minProjectorKills {
		t.Errorf("only %d relay and %d projector kill -9 cycles", counts["relay kill -9"], counts["projector kill -9"])
	}
}

func formatCounts(m map[string]int) string {
	var parts []string
	for _, k := range []string{"relay kill -9", "projector kill -9", "projector SIGTERM", "projector surge roll", "relay SIGSTOP", "projector SIGSTOP", "PostgreSQL restart", "broker restart"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s x%d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// projectorTimes are the projector faults as the read model saw them
// (suite.Prober): per kill -9, the time until every partition showed an
// event written after the kill; per rolling restart, the longest a probe
// event written during it took to be visible; and probe latencies before
// the projector faults, for scale.
type projectorTimes struct {
	failover, stall, surge, baseline []time.Duration
	// The same counted from each probe event's arrival on Kafka: the
	// projectors' share, without the writer's and the relay's.
	failoverKafka, stallKafka, surgeKafka, baselineKafka []time.Duration
	failoverMissing, stallMissing                        int // faults whose probes never became visible
	// The partitions' hand-overs in the rolling restarts and the surge
	// rolls, timed from the projectors' log lines (suite.HandOvers): how
	// long no runner applied the partition.
	handOvers, surgeHandOvers []suite.HandOver
}

// incarnations returns what the running projectors printed so far.
func incarnations(ps []*suite.Service) []suite.Incarnation {
	out := make([]suite.Incarnation, 0, len(ps))
	for _, p := range ps {
		out = append(out, suite.Incarnation{Name: p.Name(), Output: p.Output()})
	}
	return out
}

// longestHandOver describes the longest of hs for a fault's log line.
func longestHandOver(hs []suite.HandOver) string {
	if len(hs) == 0 {
		return "no partition changed hands"
	}
	worst := slices.MaxFunc(hs, func(a, b suite.HandOver) int { return cmp.Compare(a.Gap, b.Gap) })
	return fmt.Sprintf("%d partitions changed hands, the longest without a runner applying it: %s", len(hs), worst)
}

// handOverLine summarises hand-overs for the summary.
func handOverLine(kind string, hs []suite.HandOver) string {
	gaps := make([]time.Duration, 0, len(hs))
	open := 0
	for _, h := range hs {
		gaps = append(gaps, h.Gap)
		if h.Open {
			open++
		}
	}
	slices.Sort(gaps)
	line := fmt.Sprintf("%s: max hand-over gap %d ms over %d hand-overs, median %d ms (a partition with no runner applying it: from its owner stopping to the next owner's first commit)",
		kind, gaps[len(gaps)-1].Milliseconds(), len(gaps), gaps[len(gaps)/2].Milliseconds())
	if open > 0 {
		line += fmt.Sprintf("; %d not applied by another runner before the window ended (counted to the last log line)", open)
	}
	return line
}

func (pt *projectorTimes) lines() []string {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	sorted := func(ds []time.Duration) []time.Duration {
		out := slices.Clone(ds)
		slices.Sort(out)
		return out
	}
	var out []string
	if f := sorted(pt.failover); len(f) > 0 {
		out = append(out, fmt.Sprintf("projector failover: median %d ms, max %d ms over %d kills", ms(f[len(f)/2]), ms(f[len(f)-1]), len(f)))
	}
	if s := sorted(pt.stall); len(s) > 0 {
		out = append(out, fmt.Sprintf("projector rolling restart: max stall %d ms over %d restarts", ms(s[len(s)-1]), len(s)))
	}
	if f := sorted(pt.failoverKafka); len(f) > 0 {
		out = append(out, fmt.Sprintf("projector failover, counted from the probe events' arrival on Kafka: median %d ms, max %d ms", ms(f[len(f)/2]), ms(f[len(f)-1])))
	}
	if s := sorted(pt.stallKafka); len(s) > 0 {
		out = append(out, fmt.Sprintf("projector rolling restart, Kafka to read model: max stall %d ms, median of the per-restart maxima %d ms", ms(s[len(s)-1]), ms(s[len(s)/2])))
	}
	if s := sorted(pt.surge); len(s) > 0 {
		sk := sorted(pt.surgeKafka)
		out = append(out, fmt.Sprintf("projector surge roll (new replica first, as deploy/k8s): max stall %d ms over %d rolls, median of the per-roll maxima %d ms; Kafka to read model: max %d ms",
			ms(s[len(s)-1]), len(s), ms(s[len(s)/2]), ms(sk[len(sk)-1])))
	}
	if len(pt.handOvers) > 0 {
		out = append(out, handOverLine("projector rolling restart", pt.handOvers))
	}
	if len(pt.surgeHandOvers) > 0 {
		out = append(out, handOverLine("projector surge roll", pt.surgeHandOvers))
	}
	if b := sorted(pt.baseline); len(b) > 0 {
		bk := sorted(pt.baselineKafka)
		out = append(out, fmt.Sprintf("probe write to read model without a projector fault (5s before them): median %d ms, p99 %d ms, max %d ms over %d writes; Kafka to read model: median %d ms, max %d ms",
			ms(b[len(b)/2]), ms(b[len(b)*99/100]), ms(b[len(b)-1]), len(b), ms(bk[len(bk)/2]), ms(bk[len(bk)-1])))
	}
	if pt.failoverMissing+pt.stallMissing > 0 {
		out = append(out, fmt.Sprintf("projector faults whose probe events were not visible within a minute: %d kills, %d restarts",
			pt.failoverMissing, pt.stallMissing))
	}
	return out
}
