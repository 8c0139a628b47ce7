// Package seqmetrics exposes a PostgreSQL store's notification sequencer
// as Prometheus metrics: steps and records numbered, step duration,
// transactions left for the next step, failures by operation, and whether
// this process holds the table's sequencer lock. Pass [Metrics.Hooks] as
// the store's Config.Hooks (or join it with others with [postgres.JoinHooks]).
package seqmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

// Metrics holds one events table's sequencer collectors.
type Metrics struct {
	steps    prometheus.Counter
	numbered prometheus.Counter
	took     prometheus.Histogram
	backlog  prometheus.Gauge
	failures *prometheus.CounterVec
	active   prometheus.Gauge
}

// New registers the sequencer metrics of the events table table on reg.
func New(reg prometheus.Registerer, table string) *Metrics {
	labels := prometheus.Labels{"table": table}
	m := &Metrics{
		steps: prometheus.NewCounter(prometheus.CounterOpts{Name: "esflow_sequencer_steps_total",
			Help: "Sequencer steps that numbered records.", ConstLabels: labels}),
		numbered: prometheus.NewCounter(prometheus.CounterOpts{Name: "esflow_sequencer_numbered_total",
			Help: "Records given a notification id.", ConstLabels: labels}),
		took: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "esflow_sequencer_step_seconds",
			Help: "Duration of a sequencer step that numbered records.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "esflow_sequencer_backlog_transactions",
			Help: "Committed transactions the last step left for the next one (SequencerBatch reached).", ConstLabels: labels}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_sequencer_failures_total",
			Help: "Sequencer failures by operation (connect, lock, sequence); each is retried.", ConstLabels: labels}, []string{"op"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "esflow_sequencer_active",
			Help: "1 while this process holds the table's sequencer lock.", ConstLabels: labels}),
	}
	reg.MustRegister(m.steps, m.numbered, m.took, m.backlog, m.failures, m.active)
	return m
}

// Hooks returns sequencer hooks that update the metrics.
func (m *Metrics) Hooks() postgres.Hooks { return hooks{m} }

type hooks struct{ m *Metrics }

func (h hooks) Sequenced(records, _, backlog int, took time.Duration) {
	h.m.steps.Inc()
	h.m.numbered.Add(float64(records))
	h.m.took.Observe(took.Seconds())
	h.m.backlog.Set(float64(backlog))
}

func (h hooks) SequencerActive(active bool) {
	if active {
		h.m.active.Set(1)
	} else {
		h.m.active.Set(0)
	}
}

func (h hooks) Failed(op string, _ error) { h.m.failures.WithLabelValues(op).Inc() }
