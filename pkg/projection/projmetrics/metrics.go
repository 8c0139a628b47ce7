// Package projmetrics exposes projection runners as Prometheus metrics.
// Counters and histograms are fed by the runner's [projection.Hooks]
// (events applied, duplicates, gaps, dead letters, failures by
// operation, batch sizes, event age at apply); gauges are read from
// [projection.Runner.Status] at scrape time (lag per partition, age of
// the newest applied event, open gaps, readiness). Every series carries
// a "projection" label, so one [Metrics] serves all the runners of a
// process:
//
//	m := projmetrics.New(reg)
//	r, _ := projection.NewRunner(db, p, projection.RunnerConfig{Hooks: m.Hooks(p.Name()), …})
//	m.Observe(p.Name(), r)
package projmetrics

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/pkg/projection"
)

// StatusSource is what Observe reads at scrape time; *projection.Runner
// implements it.
type StatusSource interface {
	Status() projection.Status
}

// Metrics holds the collectors of a process's projections.
type Metrics struct {
	applied    *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	gaps       *prometheus.CounterVec
	dead       *prometheus.CounterVec
	failures   *prometheus.CounterVec
	batch      *prometheus.HistogramVec
	eventAge   *prometheus.HistogramVec

	mu      sync.Mutex
	sources map[string]StatusSource

	lagDesc, ageDesc, gapsDesc, readyDesc, pendingDesc *prometheus.Desc
}

// New registers the projection metrics on reg and returns them.
func New(reg prometheus.Registerer) *Metrics {
	proj := []string{"projection"}
	m := &Metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_projection_applied_total",
			Help: "Events applied to the read model."}, proj),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_projection_duplicates_total",
			Help: "Events skipped because their version was already applied."}, proj),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_projection_gaps_total",
			Help: "Events held back because an earlier version of their aggregate was missing."}, proj),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_projection_dead_lettered_total",
			Help: "Messages written to the dead-letter topic."}, proj),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_projection_failures_total",
			Help: "Failed operations the runner retried or survived, by op (fetch, apply, commit, dead-letter, handle, redrive)."},
			[]string{"projection", "op"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "esflow_projection_batch_events",
			Help: "Events applied per committed transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 11)}, proj),
		eventAge: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "esflow_projection_event_age_seconds",
			Help:    "Age of a batch's newest event when the batch committed (event timestamp to read model).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}, proj),
		sources: map[string]StatusSource{},
		lagDesc: prometheus.NewDesc("esflow_projection_partition_lag_messages",
			"Messages of an assigned partition not applied yet (high watermark of the last fetch minus the next offset).",
			[]string{"projection", "topic", "partition"}, nil),
		ageDesc: prometheus.NewDesc("esflow_projection_last_event_age_seconds",
			"Now minus the timestamp of the newest applied event (0 before the first).", []string{"projection"}, nil),
		gapsDesc: prometheus.NewDesc("esflow_projection_open_gaps",
			"Aggregates with events held back until a missing version arrives.", []string{"projection"}, nil),
		readyDesc: prometheus.NewDesc("esflow_projection_ready",
			"1 when the runner is running, caught up and has no open gap.", []string{"projection"}, nil),
		pendingDesc: prometheus.NewDesc("esflow_projection_pending_messages",
			"Messages fetched and not applied yet.", []string{"projection"}, nil),
	}
	reg.MustRegister(m.applied, m.duplicates, m.gaps, m.dead, m.failures, m.batch, m.eventAge, (*gauges)(m))
	return m
}

// Hooks returns runner hooks that count into the series of the named
// projection.
func (m *Metrics) Hooks(name string) projection.Hooks {
	return &hooks{
		applied: m.applied.WithLabelValues(name), duplicates: m.duplicates.WithLabelValues(name),
		gaps: m.gaps.WithLabelValues(name), dead: m.dead.WithLabelValues(name),
		batch: m.batch.WithLabelValues(name), age: m.eventAge.WithLabelValues(name),
		failures: m.failures, name: name,
	}
}

// Observe reports src's status as the named projection's gauges at every
// scrape. Observing a name again replaces the earlier source.
func (m *Metrics) Observe(name string, src StatusSource) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sources[name] = src
}

type hooks struct {
	applied, duplicates, gaps, dead prometheus.Counter
	batch, age                      prometheus.Observer
	failures                        *prometheus.CounterVec
	name                            string
}

func (h *hooks) Applied(n int, lag time.Duration) {
	h.applied.Add(float64(n))
	h.batch.Observe(float64(n))
	h.age.Observe(max(lag, 0).Seconds())
}

func (h *hooks) Duplicate()    { h.duplicates.Inc() }
func (h *hooks) Gap()          { h.gaps.Inc() }
func (h *hooks) DeadLettered() { h.dead.Inc() }
func (h *hooks) Failed(op string, _ error) {
	h.failures.WithLabelValues(h.name, op).Inc()
}

// gauges is the scrape-time collector of Metrics.
type gauges Metrics

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.lagDesc
	ch <- g.ageDesc
	ch <- g.gapsDesc
	ch <- g.readyDesc
	ch <- g.pendingDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	names := make([]string, 0, len(g.sources))
	for n := range g.sources {
		names = append(names, n)
	}
	srcs := make([]StatusSource, len(names))
	sort.Strings(names)
	for i, n := range names {
		srcs[i] = g.sources[n]
	}
	g.mu.Unlock()
	for i, name := range names {
		st := srcs[i].Status()
		for _, p := range st.Partitions {
			ch <- prometheus.MustNewConstMetric(g.lagDesc, prometheus.GaugeValue, float64(p.Lag), name, p.Topic, strconv.Itoa(p.Partition))
		}
		ch <- prometheus.MustNewConstMetric(g.ageDesc, prometheus.GaugeValue, st.LastEventAge.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(g.gapsDesc, prometheus.GaugeValue, float64(st.OpenGaps), name)
		ready := 0.0
		if st.Ready {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(g.readyDesc, prometheus.GaugeValue, ready, name)
		ch <- prometheus.MustNewConstMetric(g.pendingDesc, prometheus.GaugeValue, float64(st.Pending), name)
	}
}
