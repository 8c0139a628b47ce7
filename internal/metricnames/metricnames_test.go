package metricnames_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore/postgres/seqmetrics"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/projection/projmetrics"
	"github.com/esflow/esflow/pkg/relay/relaymetrics"
	"github.com/esflow/esflow/pkg/writer"
)

// recording is a Registerer that remembers what was registered, so the
// test knows every metric name described, observed or not.
type recording struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recording) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recording) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// described returns the names of every metric the collectors describe.
func (r *recording) described() map[string]bool {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range r.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	names := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// slotOutbox is a memory outbox that also reports replication-slot lag,
// as the WAL-mode source does, so that the slot gauges are registered.
type slotOutbox struct{ *application.Application }

func (s slotOutbox) Fetch(ctx context.Context, sh outbox.Shard, n int) ([]outbox.Message, error) {
	return s.Outbox().Fetch(ctx, sh, n)
}
func (s slotOutbox) Delete(ctx context.Context, ids []int64) error {
	return s.Outbox().Delete(ctx, ids)
}
func (s slotOutbox) Backlog(ctx context.Context, sh outbox.Shard) (outbox.Backlog, error) {
	return s.Outbox().Backlog(ctx, sh)
}
func (s slotOutbox) Park(ctx context.Context, id int64, why string) error {
	return s.Outbox().Park(ctx, id, why)
}
func (slotOutbox) SlotLag(context.Context) (retained, unconfirmed, limit int64, err error) {
	return 1 << 20, 1 << 10, -1, nil
}

type status struct{}

func (status) Status() projection.Status {
	return projection.Status{Running: true, Applied: 1, Partitions: []projection.PartitionLag{{Topic: "t", Partition: 0, Offset: 1, HighWaterMark: 2, Lag: 1}}}
}

// Every metric of the writer, relay, projector and sequencer, and the
// process collectors the commands serve, follows the naming conventions.
func TestMetricNames(t *testing.T) {
	ctx := context.Background()
	reg := ops.NewRegistry()
	rec := &recording{Registerer: reg}

	app, err := application.New(ctx, application.Config{DatabaseURL: "memory:", Registry: aggregate.NewRegistry(), Outbox: &outbox.Builder{}})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	// The writer registers on a *prometheus.Registry of its own
	// (Config.Registry, which /metrics serves); one request fills its
	// series, and the check below that it gathered them lists them.
	wreg := prometheus.NewRegistry()
	srv, err := writer.New(writer.Config{App: app, Registry: wreg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	rm := relaymetrics.New(rec, slotOutbox{app}, outbox.Shard{})
	rh := rm.Hooks()
	rh.Published(3, time.Millisecond, time.Millisecond)
	rh.Parked(outbox.Message{}, nil)
	rh.Failed("fetch", nil)
	rh.Active(true)

	pm := projmetrics.New(rec)
	ph := pm.Hooks("p")
	ph.Applied(2, time.Millisecond)
	ph.Duplicate()
	ph.Gap()
	ph.DeadLettered()
	ph.Failed("apply", nil)
	pm.Observe("p", status{})

	sh := seqmetrics.New(rec, "events").Hooks()
	sh.Sequenced(4, 1, 0, time.Millisecond)
	sh.SequencerActive(true)
	sh.Failed("lock", nil)

	var families []*dto.MetricFamily
	for _, g := range []prometheus.Gatherer{reg, wreg} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		families = append(families, mfs...)
	}
	gathered := map[string]bool{}
	for _, mf := range families {
		gathered[mf.GetName()] = true
	}
	for name := range rec.described() {
		if !gathered[name] {
			t.Errorf("%s is registered but was not gathered: the test must exercise it", name)
		}
	}
	esflow := 0
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "esflow_writer_") {
			esflow++
		}
	}
	if esflow != 3 {
		t.Errorf("%d writer metric families gathered, want 3", esflow)
	}
	esflow = 0
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "esflow_") {
			esflow++
		}
	}
	if esflow < 25 {
		t.Fatalf("only %d esflow_ metric families gathered", esflow)
	}

	t.Logf("%d metric families linted, %d of them esflow_", len(families), esflow)
	l := promlint.NewWithMetricFamilies(families)
	l.AddCustomValidations(projectRules)
	problems, err := l.Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// durationWords mark a metric that measures time: it must be in seconds.
var durationWords = []string{"duration", "latency", "age", "time", "took", "delay", "lag_seconds", "seconds"}

// projectRules are the conventions promlint does not check.
func projectRules(mf *dto.MetricFamily) []error {
	name := mf.GetName()
	if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
		return nil // the client library's own
	}
	var errs []error
	if !strings.HasPrefix(name, "esflow_") {
		errs = append(errs, errorf("project metrics start with esflow_"))
	}
	base := strings.TrimSuffix(name, "_total")
	for _, w := range durationWords {
		if strings.Contains(base, "_"+w) && !strings.HasSuffix(base, "_seconds") {
			errs = append(errs, errorf("a time (%q) is measured in seconds: end the name with _seconds", w))
			break
		}
	}
	if (strings.Contains(base, "_wal") || strings.Contains(base, "_size")) && !strings.HasSuffix(base, "_bytes") {
		errs = append(errs, errorf("a size is measured in bytes: end the name with _bytes"))
	}
	if mf.GetType() == dto.MetricType_GAUGE && strings.HasSuffix(name, "_count") {
		errs = append(errs, errorf("_count is the histogram and summary suffix"))
	}
	return errs
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
