package postgres_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// BenchmarkWALStream measures the WAL source's side of a drain: b.N
// messages (100 events with one message each per transaction) written
// while no relay streams, then read from the slot and deleted as a
// relay would, in batches of up to 4000. It reports messages per second
// of the read; the time is the decoding walsender's and this process's.
func BenchmarkWALStream(b *testing.B) {
	ctx := testCtx(b)
	dsn := pgtest.NewDatabase(b)
	o, src := walOutbox(b, dsn)
	value := make([]byte, 500)
	for done := 0; done < b.N; {
		n := min(100, b.N-done)
		id := uuid.New()
		recs := make([]eventstore.Record, n)
		msgs := make([]outbox.Message, n)
		for i := range n {
			recs[i] = eventstore.Record{StreamID: id, Position: uint64(i), Topic: "T", Data: value}
			msgs[i] = walMsg(i, id.String())
			msgs[i].Value = value
		}
		if err := o.AppendWithOutbox(ctx, recs, msgs); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.ResetTimer()
	_, _, release, err := src.LockFenced(ctx, outbox.Shard{})
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	wake, err := src.Wake(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for got := 0; got < b.N; {
		msgs, err := src.Fetch(ctx, outbox.Shard{}, 4000)
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) == 0 {
			<-wake
			continue
		}
		ids := make([]int64, len(msgs))
		for i, m := range msgs {
			ids[i] = m.ID
		}
		if err := src.Delete(ctx, ids); err != nil {
			b.Fatal(err)
		}
		got += len(msgs)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
