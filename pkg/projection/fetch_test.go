package projection_test

import (
	"cmp"
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

	restartBroker(t, b)
	after := worldEvents(t, 200, 4) // twice the log of before

	produce(t, newWriter(t, addr), messages(t, flatten(after)))
	waitAll(t, r, after) // published after the broker's restart
	if st := r.Status(); st.Applied != 1200 || st.Gaps != 0 {
		t.Fatalf("applied %d, gaps %d; want 1200 and 0", st.Applied, st.Gaps)
	}
	eventually(t, "ready after the restart", 10*time.Second, r.Ready)
}

// TestRestartedWithANewBroker stops a runner, replaces the broker by a
// fresh one (the embedded broker starts with an empty log and a new
// cluster id each time: go run ./cmd/esflow restarted) whose log grows
// past the offsets the runner stored before another runner starts: the
// stored offsets are positions in the old cluster's log, so the new
// runner must read every partition from its first offset, or it would
// skip the new log's first messages.
func TestRestartedWithANewBroker(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := context.Background()
			b := startBroker(t)
			addr := b.Addr()
			before := worldEvents(t, 100, 4)
			produce(t, newWriter(t, addr), messages(t, flatten(before)))

			db := be.open(t)
			p := newCounts("restarted")
			r, err := projection.NewRunner(db, p, config(b))
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, r)
			waitAll(t, r, before)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			st, err := projection.ReadStatus(ctx, db, "restarted")
			if err != nil {
				t.Fatal(err)
			}
			old := ""
			for _, l := range st.Partitions {
				if l.NextOffset > 0 && l.Cluster == "" {
					t.Fatalf("partition %d: offset %d stored without its cluster", l.Partition, l.NextOffset)
				}
				old = cmp.Or(old, l.Cluster)
			}

			b2 := restartBroker(t, b)
			after := worldEvents(t, 200, 4) // twice the log of before
			produce(t, newWriter(t, addr), messages(t, flatten(after)))

			r2, err := projection.NewRunner(db, p, config(b2))
			if err != nil {
				t.Fatal(err)
			}
			run(t, r2)
			waitAll(t, r2, after)
			if st := r2.Status(); st.Applied != 800 || st.Gaps != 0 {
				t.Fatalf("applied %d, gaps %d; want 800 and 0", st.Applied, st.Gaps)
			}
			st, err = projection.ReadStatus(ctx, db, "restarted")
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range st.Partitions {
				if l.NextOffset > 0 && (l.Cluster == "" || l.Cluster == old) {
					t.Fatalf("partition %d: offset %d stored with cluster %q, the old cluster %q", l.Partition, l.NextOffset, l.Cluster, old)
				}
			}
		})
	}
}

// restartBroker closes b and starts a fresh broker on its address, with
// the test topic: an embedded broker's restart, which keeps nothing.
func restartBroker(t *testing.T, b *broker.Broker) *broker.Broker {
	t.Helper()
	ctx := context.Background()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := broker.Start(ctx, broker.Config{Addr: b.Addr(), Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b2.Close() })
	if err := b2.CreateTopic(ctx, topic, 8); err != nil {
		t.Fatal(err)
	}
	return b2
}
