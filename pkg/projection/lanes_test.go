package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/projection"
)

// gated is the counts projection with a handler that stops at the batch
// holding one aggregate's events until the test opens the gate, before
// it writes anything (so it holds no row another batch needs).
type gated struct {
	*counts
	stuck   uuid.UUID
	entered chan struct{} // closed when the stuck batch reaches the handler
	open    chan struct{}
}

func (g *gated) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	for _, e := range events {
		if e.AggregateID == g.stuck {
			select {
			case <-g.entered:
			default:
				close(g.entered)
			}
			select {
			case <-g.open:
			case <-ctx.Done():
				return ctx.Err()
			}
			break
		}
	}
	return g.counts.HandleBatch(ctx, tx, t, events)
}

// A batch that takes long holds back only its own partitions: with
// several lanes, the other partitions' events are applied while one
// partition's handler is stuck, and the stuck one follows once it
// returns. With one lane (the default) every partition would wait.
func TestLanesApplyPartitionsSeparately(t *testing.T) {
	b := startBroker(t)
	db := openPostgres(t)
	groups := worldEvents(t, 40, 2)
	stuck := groups[0]
	g := &gated{counts: newCounts("laned_counts"), stuck: stuck[0].AggregateID,
		entered: make(chan struct{}), open: make(chan struct{})}
	r, err := projection.NewRunner(db, g, func() projection.RunnerConfig { c := config(b); c.Lanes = 4; return c }())
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	w := newWriter(t, b.Addr())
	produce(t, w, messages(t, stuck))
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the stuck world's batch never reached the handler")
	}

	// The worlds on other partitions than the stuck one's.
	var parts []int
	for i := range 8 {
		parts = append(parts, i)
	}
	partitionOf := func(e aggregate.Event) int {
		m := messages(t, []aggregate.Event{e})[0]
		return (&kafka.Murmur2Balancer{}).Balance(m, parts...)
	}
	blocked := partitionOf(stuck[0])
	var others [][]aggregate.Event
	for _, grp := range groups[1:] {
		if partitionOf(grp[0]) != blocked {
			others = append(others, grp)
		}
	}
	if len(others) < 20 {
		t.Fatalf("only %d of 39 worlds on other partitions than %d", len(others), blocked)
	}
	produce(t, w, messages(t, flatten(others)))
	waitAll(t, r, others)
	if v, ok, err := r.AppliedVersion(context.Background(), stuck[0].AggregateID); err != nil || ok {
		t.Fatalf("stuck world applied before its handler returned: version %d, %v, %v", v, ok, err)
	}
	close(g.open)
	waitAll(t, r, [][]aggregate.Event{stuck})
}
