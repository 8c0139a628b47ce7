package projection_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"

	"github.com/esflow/esflow/pkg/projection"
)

func TestDuplicatesAndReplayChangeNothing(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := startBroker(t)
			groups := worldEvents(t, 40, 5)
			msgs := messages(t, flatten(groups))
			w := newWriter(t, b.Addr())
			produce(t, w, msgs)
			produce(t, w, msgs) // every message twice

			db := be.open(t)
			p := newCounts("world_counts")
			var proj projection.Projection = p
			if be.name == "sqlite" {
				proj = perEvent{p} // exercise Handle as well
			}
			r, err := projection.NewRunner(db, proj, config(b))
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, r)
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			for _, g := range groups {
				last := g[len(g)-1]
				if err := r.WaitFor(wctx, last.AggregateID, last.Version); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "ready", 10*time.Second, r.Ready)
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			st := r.Status()
			if st.Applied != 200 || st.Duplicates != 200 || st.Gaps != 0 {
				t.Fatalf("applied %d duplicates %d gaps %d, want 200/200/0", st.Applied, st.Duplicates, st.Gaps)
			}
			want := fmt.Sprintf("World=%d\n", 200)
			for _, g := range sortedGroups(groups) {
				want += fmt.Sprintf("%s v%d %s\n", g.id, g.version, g.typ)
			}
			got, err := readModel(ctx, db, r.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("read model:\n%s\nwant:\n%s", got, want)
			}

			// Replay everything against the same database: forget the
			// offsets stored with the leases (as after an upgrade from the
			// consumer-group runner whose group committed nothing), so a
			// fresh runner reads every partition from its first offset.
			// All duplicates.
			if err := db.InTx(ctx, func(tx projection.Tx) error {
				_, err := tx.Exec(ctx, `UPDATE `+projection.LeasesTable+` SET next_offset = -1 WHERE projection = $1`, p.Name())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			cfg := config(b)
			cfg.GroupID = "replay"
			r2, err := projection.NewRunner(db, proj, cfg)
			if err != nil {
				t.Fatal(err)
			}
			stop2 := run(t, r2)
			eventually(t, "replay", 20*time.Second, func() bool { return r2.Status().Duplicates == 400 })
			if err := stop2(); err != nil {
				t.Fatal(err)
			}
			if st := r2.Status(); st.Applied != 0 {
				t.Fatalf("replay applied %d events", st.Applied)
			}
			got2, err := readModel(ctx, db, r.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if got2 != want {
				t.Fatalf("read model after replay:\n%s\nwant:\n%s", got2, want)
			}
		})
	}
}

func TestGapHeldUntilMissingEventArrives(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := startBroker(t)
			groups := worldEvents(t, 2, 3)
			a := messages(t, groups[0]) // v0 v1 v2
			other := messages(t, groups[1])
			w := newWriter(t, b.Addr())
			// The relay failed v1: v0, v2 arrive, then v1 and v2 again.
			produce(t, w, []kafka.Message{a[0], a[2]})
			produce(t, w, other)

			db := be.open(t)
			r, err := projection.NewRunner(db, newCounts("gap_counts"), config(b))
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			last := groups[1][2]
			if err := r.WaitFor(wctx, last.AggregateID, last.Version); err != nil {
				t.Fatal(err) // the other aggregate is not held up
			}
			eventually(t, "gap", 10*time.Second, func() bool { return r.Status().Gaps == 1 })
			if v, ok, err := r.AppliedVersion(ctx, groups[0][0].AggregateID); err != nil || !ok || v != 0 {
				t.Fatalf("applied version %d %v %v, want 0 (v2 held back)", v, ok, err)
			}
			gaps, err := r.UnresolvedGaps(ctx)
			if err != nil || len(gaps) != 1 || gaps[0].ExpectedVersion != 1 || gaps[0].SeenVersion != 2 {
				t.Fatalf("gaps %+v %v", gaps, err)
			}
			time.Sleep(400 * time.Millisecond)
			if r.Ready() {
				t.Fatal("ready with an open gap")
			}

			produce(t, w, []kafka.Message{a[1], a[2]})
			if err := r.WaitFor(wctx, groups[0][2].AggregateID, 2); err != nil {
				t.Fatal(err)
			}
			eventually(t, "ready", 10*time.Second, r.Ready)
			if gaps, err := r.UnresolvedGaps(ctx); err != nil || len(gaps) != 0 {
				t.Fatalf("gaps after resolution %+v %v", gaps, err)
			}
			got, err := readModel(ctx, db, r.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, "World=6\n") {
				t.Fatalf("read model:\n%s", got)
			}
		})
	}
}

func TestPoisonMessagesAreDeadLetteredAndRedriven(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b := startBroker(t)
			groups := worldEvents(t, 10, 4)
			msgs := messages(t, flatten(groups))
			w := newWriter(t, b.Addr())
			garbage := kafka.Message{Topic: topic, Key: []byte("junk"), Value: []byte("not json"),
				Headers: []kafka.Header{{Key: "content-type", Value: []byte("text/plain")}}}
			produce(t, w, append(msgs, garbage))

			db := be.open(t)
			p := newCounts("poison_counts")
			poison := groups[3][1] // v1 of aggregate 3: v2, v3 must still apply
			p.fail(poison.ID, true)
			r, err := projection.NewRunner(db, p, config(b))
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			for _, g := range groups {
				last := g[len(g)-1]
				if err := r.WaitFor(wctx, last.AggregateID, last.Version); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "dead letters", 10*time.Second, func() bool { return r.Status().DeadLettered == 2 })

			dlq := readTopic(t, b.Addr(), "poison_counts.dlq", 2)
			var sawGarbage, sawPoison bool
			for _, m := range dlq {
				h := headers(m)
				if h[projection.HeaderDLQError] == "" || h[projection.HeaderDLQProjection] != "poison_counts" ||
					h[projection.HeaderDLQSourceTopic] != topic || h[projection.HeaderDLQSourceOffset] == "" {
					t.Fatalf("dead letter headers %v", h)
				}
				switch {
				case string(m.Value) == "not json":
					sawGarbage = h["content-type"] == "text/plain"
				case h["esflow-event-id"] == poison.ID.String():
					sawPoison = strings.Contains(h[projection.HeaderDLQError], "poison")
				}
			}
			if !sawGarbage || !sawPoison {
				t.Fatalf("dead letters: garbage %v poison %v", sawGarbage, sawPoison)
			}
			got, err := readModel(ctx, db, r.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, "World=39\n") {
				t.Fatalf("read model:\n%s", got)
			}
			if dl, err := r.DeadLetters(ctx, false); err != nil || len(dl) != 1 || dl[0].EventID != poison.ID.String() {
				t.Fatalf("dead letters table %+v %v", dl, err)
			}

			// Fixed: redrive applies the dead letter once, however often.
			p.fail(poison.ID, false)
			res, err := r.Redrive(ctx, projection.RedriveConfig{IdleTimeout: time.Second})
			if err != nil || res.Applied != 1 || res.Failed != 1 {
				t.Fatalf("redrive %+v %v", res, err)
			}
			res, err = r.Redrive(ctx, projection.RedriveConfig{FromBeginning: true, IdleTimeout: time.Second})
			if err != nil || res.Applied != 0 || res.Skipped != 1 {
				t.Fatalf("second redrive %+v %v", res, err)
			}
			got, err = readModel(ctx, db, r.Tables())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, "World=40\n") || !strings.Contains(got, poison.AggregateID.String()+" v3 ") {
				t.Fatalf("read model after redrive:\n%s", got)
			}
		})
	}
}

type aggRow struct {
	id, typ string
	version uint64
}

// sortedGroups is the aggregates table one clean delivery produces.
func sortedGroups(groups [][]aggregate.Event) []aggRow {
	out := make([]aggRow, len(groups))
	for i, g := range groups {
		last := g[len(g)-1]
		out[i] = aggRow{last.AggregateID.String(), last.Type, last.Version}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func headers(m kafka.Message) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[h.Key] = string(h.Value)
	}
	return out
}

// readTopic reads n messages from all partitions of a topic.
func readTopic(t *testing.T, addr, name string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: "inspect", GroupTopics: []string{name},
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, CommitInterval: time.Second})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		out = append(out, m)
	}
	return out
}
