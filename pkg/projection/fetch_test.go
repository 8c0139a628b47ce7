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
// across a restart): the offsets the runner stored are beyond the new
// partitions' ends, so it must read them again from their first offsets,
// and it applies what is published after the restart.
func TestBrokerThatForgotItsLog(t *testing.T) {
	ctx := context.Background()
	b := startBroker(t)
	addr := b.Addr()
	// 100 worlds of 4 events: every partition ends far beyond the 8
	// events published after the restart.
	before := worldEvents(t, 100, 4)
	produce(t, newWriter(t, addr), messages(t, flatten(before)))

	db := openPostgres(t)
	r, err := projection.NewRunner(db, newCounts("forgotten"), config(b))
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
	after := worldEvents(t, 8, 1)
	produce(t, newWriter(t, addr), messages(t, flatten(after)))
	waitAll(t, r, after) // published after the broker's restart
	if st := r.Status(); st.Applied != 408 || st.Gaps != 0 {
		t.Fatalf("applied %d, gaps %d; want 408 and 0", st.Applied, st.Gaps)
	}
	eventually(t, "ready after the restart", 10*time.Second, r.Ready)
}
