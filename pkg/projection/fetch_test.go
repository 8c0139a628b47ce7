package projection_test

import (
	"context"
	"testing"
	"time"

	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/projection"
)

// TestBrokerThatForgotItsLog replaces the broker under a running runner
// by a fresh one on the same address (the embedded broker keeps nothing
// across a restart) and fills the new log past the offsets the runner
// stored while its fetch loops wait out their backoff: the loops must see
// the new cluster and read the partitions again from their first
// offsets, or they would skip the new log's first messages.
func TestBrokerThatForgotItsLog(t *testing.T) {
	ctx := context.Background()
	b := startBroker(t)
	addr := b.Addr()
	before := worldEvents(t, 100, 4)
	produce(t, newWriter(t, addr), messages(t, flatten(before)))

	db := openPostgres(t)
	cfg := config(b)
	cfg.RetryBackoff = 2 * time.Second // the new log grows meanwhile
	r, err := projection.NewRunner(db, newCounts("forgotten"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	waitAll(t, r, before)

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := broker.Start(ctx, broker.Config{Addr: addr, Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	if err := b2.CreateTopic(ctx, topic, 8); err != nil {
		t.Fatal(err)
	}
	after := worldEvents(t, 200, 4) // twice the log of before

	produce(t, newWriter(t, addr), messages(t, flatten(after)))
	waitAll(t, r, after) // published after the broker's restart
	if st := r.Status(); st.Applied != 1200 || st.Gaps != 0 {
		t.Fatalf("applied %d, gaps %d; want 1200 and 0", st.Applied, st.Gaps)
	}
	eventually(t, "ready after the restart", 10*time.Second, r.Ready)
}
