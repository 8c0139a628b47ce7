package relaymetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SlotSource is a relay source that streams from a PostgreSQL
// replication slot (the WAL-mode outbox's WALSource). A stopped or
// stuck relay makes PostgreSQL keep the slot's WAL, so New registers the
// slot's lag for such a source.
type SlotSource interface {
	// SlotLag returns the WAL the server retains for the slot, the WAL
	// written after its confirmed position, and max_slot_wal_keep_size,
	// all in bytes (limit -1: unlimited).
	SlotLag(ctx context.Context) (retained, unconfirmed, limit int64, err error)
}

// SlotAlarmBytes is the retained WAL at which an operator should be
// alerted (esflow_relay_slot_alarm_bytes): 1 GiB, about a minute and a
// half of the W2 drain's WAL on the benchmark machine, far above what a
// running relay keeps (it confirms within a second of publishing). The
// limit itself is PostgreSQL's max_slot_wal_keep_size, past which the
// server invalidates the slot to protect its disk, and the messages not
// yet decoded are then lost to the relay: set it (for example to 16 GiB)
// and alert well before it. See pkg/outbox/postgres/WAL.md.
const SlotAlarmBytes = 1 << 30

type slot struct {
	src    SlotSource
	labels prometheus.Labels
}

func (s *slot) descs() (retained, unconfirmed, limit, alarm *prometheus.Desc) {
	return prometheus.NewDesc("esflow_relay_slot_retained_wal_bytes", "WAL PostgreSQL retains for the relay's replication slot (from restart_lsn).", nil, s.labels),
		prometheus.NewDesc("esflow_relay_slot_unconfirmed_wal_bytes", "WAL written after the slot's confirmed position: not yet published or not yet confirmed.", nil, s.labels),
		prometheus.NewDesc("esflow_relay_slot_wal_limit_bytes", "max_slot_wal_keep_size in bytes (-1: unlimited); past it the slot is invalidated.", nil, s.labels),
		prometheus.NewDesc("esflow_relay_slot_alarm_bytes", "Retained WAL at which to alert (SlotAlarmBytes).", nil, s.labels)
}

func (s *slot) Describe(ch chan<- *prometheus.Desc) {
	a, b, c, d := s.descs()
	ch <- a
	ch <- b
	ch <- c
	ch <- d
}

func (s *slot) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	retained, unconfirmed, limit, alarm := s.descs()
	ch <- prometheus.MustNewConstMetric(alarm, prometheus.GaugeValue, SlotAlarmBytes)
	r, u, l, err := s.src.SlotLag(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(retained, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(retained, prometheus.GaugeValue, float64(r))
	ch <- prometheus.MustNewConstMetric(unconfirmed, prometheus.GaugeValue, float64(u))
	ch <- prometheus.MustNewConstMetric(limit, prometheus.GaugeValue, float64(l))
}
