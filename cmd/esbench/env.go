package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/esflow/esflow/internal/proccpu"
)

// env is what every workload gets: the servers, the sizes and a logger.
type env struct {
	pg    *pgServer
	kafka *kafkaServer
	scale scale
	log   *slog.Logger
	say   func(format string, a ...any)
	runID string // makes topic and group names unique to this run
}

// name returns a database, topic or group name unique to this run.
func (e *env) name(parts ...string) string {
	n := "esbench_" + e.runID
	for _, p := range parts {
		n += "_" + p
	}
	return n
}

// saveSetting is one point of workload 1.
type saveSetting struct {
	perTx, concurrency int
}

// scale holds every size the workloads use; full is the issue's, quick a
// smoke test.
type scale struct {
	saveWarm, saveTime time.Duration
	saveSettings       []saveSetting

	relayEvents int

	latRate int // events per second
	latTime time.Duration

	projEvents, projPerAccount int

	loadSizes []int
	loadTime  time.Duration // spent loading each size, per side

	pySaves    map[string]int // per backend: saves, then as many gets
	pyTx       int            // transactions of workload 6b
	pyTxEvents int            // events per transaction
	pyWorkers  int

	seqEvents   int           // events per layout of workload 7's write cost
	seqLoadTime time.Duration // workload 7's W1 c=32 load
	seqBacklog  int           // events of workload 7's catch-up
	seqPaceTime time.Duration // each run of workload 7's pacing comparison
}

func fullScale() scale {
	return scale{
		saveWarm: time.Second, saveTime: 3 * time.Second,
		saveSettings: []saveSetting{{1, 1}, {1, 8}, {1, 32}, {100, 1}, {100, 8}},
		relayEvents:  100_000,
		latRate:      500, latTime: 20 * time.Second,
		projEvents: 100_000, projPerAccount: 10,
		loadSizes: []int{1, 100, 10_000}, loadTime: 3 * time.Second,
		pySaves: map[string]int{"postgres": 2_500, "sqlite": 15_000},
		pyTx:    60, pyTxEvents: 500, pyWorkers: 4,
		seqEvents: 20_000, seqLoadTime: 10 * time.Second, seqBacklog: 200_000, seqPaceTime: 3 * time.Second,
	}
}

func quickScale() scale {
	return scale{
		saveWarm: 50 * time.Millisecond, saveTime: 250 * time.Millisecond,
		saveSettings: []saveSetting{{1, 1}, {1, 8}, {1, 32}, {100, 1}, {100, 8}},
		relayEvents:  2_000,
		latRate:      500, latTime: time.Second,
		projEvents: 2_000, projPerAccount: 10,
		loadSizes: []int{1, 100, 1_000}, loadTime: 100 * time.Millisecond,
		pySaves: map[string]int{"postgres": 100, "sqlite": 300},
		pyTx:    8, pyTxEvents: 50, pyWorkers: 4,
		seqEvents: 800, seqLoadTime: 500 * time.Millisecond, seqBacklog: 2_000, seqPaceTime: 200 * time.Millisecond,
	}
}

// workload is one of the six.
type workload struct {
	id, title string
	run       func(ctx context.Context, e *env) (*section, error)
}

var workloads = []workload{
	{"w1", "full save path (events + outbox in one transaction) vs plain pgx", runSave},
	{"w2", "relay drain of an outbox backlog into Kafka vs a plain kafka-go producer", runRelay},
	{"w3", "latency at a steady rate: commit → Kafka consumer, commit → read model", runLatency},
	{"w4", "projector drain from Kafka into a read model with tracking", runProjector},
	{"w5", "loading an aggregate, with and without snapshots", runLoad},
	{"w6", "the Python library's timing tests, for comparison", runPython},
	{"w7", "notification sequencer: write cost per layout, rate under load, catch-up", runSequencer},
}

func knownWorkload(id string) bool {
	for _, w := range workloads {
		if w.id == id {
			return true
		}
	}
	return false
}

// rate formats events per second.
func rate(perSec float64) string {
	switch {
	case perSec >= 10_000:
		return fmt.Sprintf("%.0fk", perSec/1000)
	case perSec >= 1000:
		return fmt.Sprintf("%.1fk", perSec/1000)
	default:
		return fmt.Sprintf("%.0f", perSec)
	}
}

// cpu is the CPU time used so far by this process, by the PostgreSQL
// server's processes (every process named postgres on this machine:
// zero for a remote DATABASE_URL) and by the child broker (zero for
// KAFKA_BROKERS).
func (e *env) cpu() cpuMark {
	c := cpuMark{self: proccpu.Self(), pg: proccpu.Named("postgres")}
	if e.kafka.pid != 0 {
		c.broker = proccpu.PIDs(e.kafka.pid)
	}
	return c
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// spread formats the median rate of xs and their range.
func spread(xs []float64) string {
	if len(xs) < 2 {
		return rate(median(xs))
	}
	m := median(xs)
	return fmt.Sprintf("%s (%s–%s)", rate(m), rate(xs[0]), rate(xs[len(xs)-1]))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
