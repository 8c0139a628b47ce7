package projmetrics_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/projection/projmetrics"
)

func TestHooksAndGauges(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	reg := prometheus.NewRegistry()
	m := projmetrics.New(reg)
	r, err := projection.NewRunner(projection.NewSQLite(db), readmodel.Worlds{}, projection.RunnerConfig{
		Brokers: []string{"127.0.0.1:1"}, Hooks: m.Hooks("worlds"),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Observe("worlds", r)
	h := m.Hooks("worlds")
	h.Applied(3, 2*time.Second)
	h.Applied(1, time.Second)
	h.Duplicate()
	h.Gap()
	h.DeadLettered()
	h.Failed("apply", errors.New("x"))
	h.Failed("apply", errors.New("y"))
	h.Failed("fetch", errors.New("z"))

	got := gather(t, reg)
	for series, want := range map[string]float64{
		`esflow_projection_applied_total{projection="worlds"}`:             4,
		`esflow_projection_duplicates_total{projection="worlds"}`:          1,
		`esflow_projection_gaps_total{projection="worlds"}`:                1,
		`esflow_projection_dead_lettered_total{projection="worlds"}`:       1,
		`esflow_projection_failures_total{op="apply",projection="worlds"}`: 2,
		`esflow_projection_failures_total{op="fetch",projection="worlds"}`: 1,
		`esflow_projection_batch_events_count{projection="worlds"}`:        2,
		`esflow_projection_batch_events_sum{projection="worlds"}`:          4,
		`esflow_projection_event_age_seconds_sum{projection="worlds"}`:     3,
		`esflow_projection_ready{projection="worlds"}`:                     0, // not running
		`esflow_projection_open_gaps{projection="worlds"}`:                 0,
		`esflow_projection_last_event_age_seconds{projection="worlds"}`:    0, // nothing applied by the runner itself
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
}

// gather flattens the registry into "name{label="value",…}" -> value,
// labels sorted by name; histograms as _count and _sum.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			sort.Strings(ls)
			labels := "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[mf.GetName()+labels] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[mf.GetName()+labels] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[mf.GetName()+"_count"+labels] = float64(m.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"+labels] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}
