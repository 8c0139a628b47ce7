// Package relaymetrics exposes a relay's activity as Prometheus metrics:
// messages published and parked, errors, publish latency, active state,
// and — read from the outbox at scrape time — backlog rows and the age of
// the oldest unpublished row, and for a replication-slot source the WAL
// its slot retains ([SlotSource]).
package relaymetrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
)

// Metrics holds a relay's collectors.
type Metrics struct {
	published *prometheus.CounterVec
	parked    prometheus.Counter
	errors    *prometheus.CounterVec
	took      prometheus.Histogram
	lag       prometheus.Histogram
	active    prometheus.Gauge
}

// New registers the relay metrics of one shard on reg and returns them.
// src is queried for the backlog at each scrape.
func New(reg prometheus.Registerer, src outbox.Source, shard outbox.Shard) *Metrics {
	labels := prometheus.Labels{"shard": strconv.Itoa(shard.Index)}
	m := &Metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_relay_published_total", Help: "Messages published and acknowledged.", ConstLabels: labels}, nil),
		parked:    prometheus.NewCounter(prometheus.CounterOpts{Name: "esflow_relay_parked_total", Help: "Messages parked after a permanent broker refusal.", ConstLabels: labels}),
		errors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esflow_relay_errors_total", Help: "Failed relay operations by op.", ConstLabels: labels}, []string{"op"}),
		took: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "esflow_relay_publish_seconds", Help: "Time to publish one batch.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "esflow_relay_commit_to_publish_seconds", Help: "Age of a batch's oldest message when published.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "esflow_relay_active", Help: "1 when this relay owns its shard.", ConstLabels: labels}),
	}
	reg.MustRegister(m.published, m.parked, m.errors, m.took, m.lag, m.active, &backlog{src: src, shard: shard, labels: labels})
	if ss, ok := src.(SlotSource); ok {
		reg.MustRegister(&slot{src: ss, labels: labels})
	}
	return m
}

// Hooks returns relay hooks that update the metrics.
func (m *Metrics) Hooks() relay.Hooks {
	return relay.Hooks{
		Published: func(n int, took, lag time.Duration) {
			m.published.WithLabelValues().Add(float64(n))
			m.took.Observe(took.Seconds())
			m.lag.Observe(lag.Seconds())
		},
		Parked: func(outbox.Message, error) { m.parked.Inc() },
		Failed: func(op string, _ error) { m.errors.WithLabelValues(op).Inc() },
		Active: func(active bool) {
			if active {
				m.active.Set(1)
			} else {
				m.active.Set(0)
			}
		},
	}
}

type backlog struct {
	src    outbox.Source
	shard  outbox.Shard
	labels prometheus.Labels
}

func (b *backlog) descs() (rows, age *prometheus.Desc) {
	return prometheus.NewDesc("esflow_relay_backlog_messages", "Unpublished outbox messages of the shard.", nil, b.labels),
		prometheus.NewDesc("esflow_relay_oldest_unpublished_seconds", "Age of the oldest unpublished message (0 when none).", nil, b.labels)
}

func (b *backlog) Describe(ch chan<- *prometheus.Desc) {
	rows, age := b.descs()
	ch <- rows
	ch <- age
}

func (b *backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bl, err := b.src.Backlog(ctx, b.shard)
	rows, age := b.descs()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(rows, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(rows, prometheus.GaugeValue, float64(bl.Messages))
	oldest := 0.0
	if !bl.Oldest.IsZero() {
		oldest = time.Since(bl.Oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(age, prometheus.GaugeValue, oldest)
}
