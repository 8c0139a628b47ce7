package seqmetrics_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/eventstore/postgres/seqmetrics"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestMetricsFollowTheSequencer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	m := seqmetrics.New(reg, "events")
	s, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Config{Hooks: m.Hooks()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	for pos := range uint64(3) {
		if err := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: pos, Topic: "T", Data: []byte("{}")}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sequence(ctx); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				got[f.GetName()] += mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				got[f.GetName()] += mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				got[f.GetName()] += float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	if got["esflow_sequencer_numbered_total"] != 3 || got["esflow_sequencer_active"] != 1 ||
		got["esflow_sequencer_steps_total"] < 1 || got["esflow_sequencer_step_seconds"] != got["esflow_sequencer_steps_total"] {
		t.Fatalf("metrics after 3 appends: %v", got)
	}
}
