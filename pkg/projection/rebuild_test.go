package projection_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

// pipeline is an event store with an outbox whose messages pump copies
// to the broker: the relay's job, done synchronously.
type pipeline struct {
	t      testing.TB
	app    *application.Application
	b      *broker.Broker
	w      *kafka.Writer
	worlds *application.Repository[*domain.World]

	mu  sync.Mutex
	ids []uuid.UUID
}

func newPipeline(t testing.TB, storeURL string) *pipeline {
	t.Helper()
	ctx := context.Background()
	b := startBroker(t)
	if err := b.CreateTopic(ctx, readmodel.ExampleTopic, 4); err != nil {
		t.Fatal(err)
	}
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{
		DatabaseURL: storeURL, Registry: reg, CreateTables: true, Outbox: &outbox.Builder{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return &pipeline{
		t: t, app: app, b: b, w: newWriter(t, b.Addr()),
		worlds: application.NewRepository(app.Store, func() *domain.World { return new(domain.World) }),
	}
}

// storeURL returns an event store database on the backend's kind of server.
func storeURL(t testing.TB, backend string) string {
	if backend == "postgres" {
		return pgtest.NewDatabase(t)
	}
	return "sqlite:///" + filepath.Join(t.TempDir(), "events.db")
}

// change creates a world (every third call, or when there is none) or
// adds an event to an existing one.
func (p *pipeline) change(ctx context.Context, i int) error {
	p.mu.Lock()
	n := len(p.ids)
	var id uuid.UUID
	if n > 0 {
		id = p.ids[i%n]
	}
	p.mu.Unlock()
	if n == 0 || i%3 == 0 {
		w, err := domain.NewWorld(fmt.Sprintf("ruler %d", i))
		if err != nil {
			return err
		}
		if err := p.app.Save(ctx, w); err != nil {
			return err
		}
		p.mu.Lock()
		p.ids = append(p.ids, w.ID())
		p.mu.Unlock()
		return nil
	}
	w, err := p.worlds.Get(ctx, id)
	if err != nil {
		return err
	}
	if i%7 == 0 {
		err = w.SetRuler(fmt.Sprintf("ruler %d", i))
	} else {
		err = w.MakeItSo(fmt.Sprintf("thing %d", i))
	}
	if err != nil {
		return err
	}
	return p.app.Save(ctx, w)
}

// pump publishes the outbox to the broker until it is empty.
func (p *pipeline) pump(ctx context.Context) error {
	box := p.app.Outbox()
	for {
		msgs, err := box.Fetch(ctx, outbox.Shard{}, 1000)
		if err != nil || len(msgs) == 0 {
			return err
		}
		kmsgs := make([]kafka.Message, len(msgs))
		ids := make([]int64, len(msgs))
		for i, m := range msgs {
			km := kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
			}
			kmsgs[i], ids[i] = km, m.ID
		}
		if err := p.w.WriteMessages(ctx, kmsgs...); err != nil {
			return err
		}
		if err := box.Delete(ctx, ids); err != nil {
			return err
		}
	}
}

// waitApplied waits until r has applied every world's stored version.
func (p *pipeline) waitApplied(t testing.TB, r *projection.Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The worlds as the store has them, not p.ids: a save cancelled when
	// the writes stop may have committed without its id being recorded.
	worlds, _ := p.truth(t)
	for _, w := range worlds {
		if err := r.WaitFor(ctx, w.ID, w.Version-1); err != nil {
			t.Fatal(err)
		}
	}
}

// truth computes both read models from the event store directly.
func (p *pipeline) truth(t testing.TB) ([]readmodel.World, []readmodel.Count) {
	t.Helper()
	ctx := context.Background()
	counts := map[[2]string]int64{}
	var worlds []readmodel.World
	for start := uint64(1); ; {
		ns, err := p.app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: start, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) == 0 {
			break
		}
		for _, n := range ns {
			e, err := p.app.Store.Mapper().Decode(n.Record)
			if err != nil {
				t.Fatal(err)
			}
			counts[[2]string{e.AggregateType, e.Type}]++
			if e.Version == 0 && e.AggregateType == "World" {
				w, err := p.worlds.Get(ctx, e.AggregateID)
				if err != nil {
					t.Fatal(err)
				}
				h := w.History
				if h == nil {
					h = []string{}
				}
				worlds = append(worlds, readmodel.World{ID: w.ID(), Ruler: w.Ruler, History: h, Version: w.Version()})
			}
			start = n.ID + 1
		}
	}
	out := []readmodel.Count{}
	for k, n := range counts {
		out = append(out, readmodel.Count{AggregateType: k[0], EventType: k[1], Count: n})
	}
	sortCounts(out)
	sortWorlds(worlds)
	return worlds, out
}

func sortCounts(cs []readmodel.Count) {
	for i := range cs {
		for j := i + 1; j < len(cs); j++ {
			if cs[j].AggregateType+"\x00"+cs[j].EventType < cs[i].AggregateType+"\x00"+cs[i].EventType {
				cs[i], cs[j] = cs[j], cs[i]
			}
		}
	}
}

func sortWorlds(ws []readmodel.World) {
	for i := range ws {
		for j := i + 1; j < len(ws); j++ {
			if ws[j].ID.String() < ws[i].ID.String() {
				ws[i], ws[j] = ws[j], ws[i]
			}
		}
	}
}

// dump reads both read models from the tables with the given suffix.
func dump(t testing.TB, db projection.DB, suffix string) ([]readmodel.World, []readmodel.Count) {
	t.Helper()
	ctx := context.Background()
	wt, err := projection.NewTables(readmodel.Worlds{}.Tables(), suffix)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := projection.NewTables(readmodel.EventCounts{}.Tables(), suffix)
	if err != nil {
		t.Fatal(err)
	}
	var ws []readmodel.World
	var cs []readmodel.Count
	err = db.InTx(ctx, func(tx projection.Tx) (err error) {
		if ws, err = readmodel.ListWorlds(ctx, tx, wt, 1<<30); err != nil {
			return err
		}
		cs, err = readmodel.ListCounts(ctx, tx, ct)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sortWorlds(ws)
	return ws, cs
}

func TestRebuildEqualsLiveReadModel(t *testing.T) {
	for _, be := range backends {
		for _, source := range []string{"store", "kafka"} {
			t.Run(be.name+"/"+source, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
				defer cancel()
				p := newPipeline(t, storeURL(t, be.name))
				for i := range 120 {
					must(t, p.change(ctx, i))
				}
				must(t, p.pump(ctx))

				db := be.open(t)
				cfg := config(p.b)
				worlds, err := projection.NewRunner(db, readmodel.Worlds{}, cfg)
				must(t, err)
				counts, err := projection.NewRunner(db, readmodel.EventCounts{}, cfg)
				must(t, err)
				must(t, worlds.Setup(ctx))
				must(t, counts.Setup(ctx))
				stopWorlds, stopCounts := run(t, worlds), run(t, counts)
				p.waitApplied(t, worlds)
				p.waitApplied(t, counts)
				eventually(t, "counts ready", 30*time.Second, counts.Ready)

				src := func() projection.RebuildSource {
					if source == "store" {
						return projection.StoreSource{Store: p.app.Store}
					}
					return projection.KafkaSource{}
				}
				rcfg := func() projection.RebuildConfig {
					return projection.RebuildConfig{Source: src(), Runner: cfg, ProgressEvery: time.Millisecond}
				}

				// 1. Nothing changes meanwhile: the rebuilt tables equal the
				// live ones they replace (kept as _old).
				for _, proj := range []projection.Projection{readmodel.Worlds{}, readmodel.EventCounts{}} {
					c := rcfg()
					c.KeepOld = true
					var reports int
					c.Progress = func(projection.RebuildProgress) { reports++ }
					res, err := projection.Rebuild(ctx, db, proj, c)
					must(t, err)
					if res.Applied == 0 || reports == 0 {
						t.Fatalf("%s: rebuild applied %d events, %d progress reports", proj.Name(), res.Applied, reports)
					}
				}
				gotW, gotC := dump(t, db, "")
				oldW, oldC := dump(t, db, "_old")
				if !reflect.DeepEqual(gotW, oldW) || !reflect.DeepEqual(gotC, oldC) {
					t.Fatalf("rebuilt read model differs from the live one:\nworlds %v\nlive   %v\ncounts %v\nlive   %v", gotW, oldW, gotC, oldC)
				}
				wantW, wantC := p.truth(t)
				if !reflect.DeepEqual(gotW, wantW) || !reflect.DeepEqual(gotC, wantC) {
					t.Fatalf("rebuilt read model differs from the store:\ncounts %v\nwant   %v", gotC, wantC)
				}

				// 2. Rebuild while events keep coming and the live runners
				// keep applying them. The progress callback holds the first
				// swap until the live runner has applied events the
				// catch-up did not read, so the swap transaction must apply
				// them itself.
				wctx, stopWrites := context.WithCancel(ctx)
				var wg sync.WaitGroup
				var writeErr error
				written := make(chan int, 1000)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 1000; wctx.Err() == nil; i++ {
						if err := p.change(wctx, i); err != nil {
							if wctx.Err() == nil {
								writeErr = err
							}
							return
						}
						if err := p.pump(wctx); err != nil {
							if wctx.Err() == nil {
								writeErr = err
							}
							return
						}
						select {
						case written <- i:
						default:
						}
					}
				}()
				for _, x := range []struct {
					p projection.Projection
					r *projection.Runner
				}{{readmodel.Worlds{}, worlds}, {readmodel.EventCounts{}, counts}} {
					c := rcfg()
					held := false
					c.Progress = func(pg projection.RebuildProgress) {
						if pg.Phase != projection.PhaseSwap || held {
							return
						}
						held = true
						before := x.r.Status().Applied
						for range 10 {
							<-written
						}
						eventually(t, "live runner applies new events", 30*time.Second, func() bool {
							return x.r.Status().Applied >= before+5
						})
					}
					if _, err := projection.Rebuild(ctx, db, x.p, c); err != nil {
						t.Fatalf("rebuild %s during writes: %v", x.p.Name(), err)
					}
				}
				// New events after the swap still apply, exactly once.
				for range 10 {
					<-written
				}
				stopWrites()
				wg.Wait()
				must(t, writeErr)
				must(t, p.pump(ctx))
				p.waitApplied(t, worlds)
				p.waitApplied(t, counts)
				eventually(t, "counts ready after the swap", 30*time.Second, counts.Ready)
				gotW, gotC = dump(t, db, "")
				wantW, wantC = p.truth(t)
				if !reflect.DeepEqual(gotW, wantW) {
					t.Errorf("worlds after rebuild during writes:\n%v\nwant\n%v", gotW, wantW)
				}
				if !reflect.DeepEqual(gotC, wantC) {
					t.Errorf("counts after rebuild during writes:\n%v\nwant\n%v", gotC, wantC)
				}
				must(t, stopWorlds())
				must(t, stopCounts())
			})
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRebuildRefusesToGoBackwards rebuilds from an event store that
// lacks events the live read model has applied (the wrong store, or a
// topic past its retention): the swap is refused with ErrRebuildBehind
// and the live tables and tracking stay as they were.
func TestRebuildRefusesToGoBackwards(t *testing.T) {
	ctx := context.Background()
	p := newPipeline(t, storeURL(t, "sqlite"))
	for i := range 30 {
		must(t, p.change(ctx, i))
	}
	must(t, p.pump(ctx))
	db := openSQLite(t)
	live, err := projection.NewRunner(db, readmodel.EventCounts{}, config(p.b))
	must(t, err)
	stop := run(t, live)
	p.waitApplied(t, live)
	must(t, stop())
	worlds, err := projection.NewRunner(db, readmodel.Worlds{}, config(p.b)) // dump reads its (empty) table too
	must(t, err)
	must(t, worlds.Setup(ctx))
	before, beforeCounts := dump(t, db, "")

	other := newPipeline(t, storeURL(t, "sqlite")) // an unrelated store with fewer events
	for i := range 5 {
		must(t, other.change(ctx, i))
	}
	_, err = projection.Rebuild(ctx, db, readmodel.EventCounts{}, projection.RebuildConfig{
		Source: projection.StoreSource{Store: other.app.Store}, Runner: config(p.b), SwapAttempts: 2,
	})
	if !errors.Is(err, projection.ErrRebuildBehind) {
		t.Fatalf("rebuild from a store lacking events: %v, want ErrRebuildBehind", err)
	}
	after, afterCounts := dump(t, db, "")
	if !reflect.DeepEqual(before, after) || !reflect.DeepEqual(beforeCounts, afterCounts) {
		t.Fatalf("live read model changed by a refused rebuild:\n%v\nwas\n%v", afterCounts, beforeCounts)
	}
	for _, id := range p.ids {
		if _, ok, err := live.AppliedVersion(ctx, id); err != nil || !ok {
			t.Fatalf("live tracking of %s lost: %v", id, err)
		}
	}
}
