package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

func walOutbox(t testing.TB, dsn string) (*postgres.Outbox, *postgres.WALSource) {
	t.Helper()
	o := open(t, dsn, postgres.Config{WAL: true}, eventstore.Schema{})
	src, err := o.WALSource(postgres.WALConfig{StatusInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return o, src
}

// fetchN fetches from a locked source until n messages are there.
func fetchN(t *testing.T, src *postgres.WALSource, n int) []outbox.Message {
	t.Helper()
	ctx := testCtx(t)
	wake, err := src.Wake(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for {
		msgs, err := src.Fetch(ctx, outbox.Shard{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-wake:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatalf("got %d messages, want %d", len(msgs), n)
		}
	}
}

func walMsg(i int, key string) outbox.Message {
	return outbox.Message{
		Topic: "esflow.T", Key: []byte(key), Value: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		Headers: []outbox.Header{{Key: "esflow-n", Value: []byte(fmt.Sprint(i))}, {Key: "empty", Value: []byte{}}},
	}
}

// TestWALMode checks the WAL mode end to end against PostgreSQL: messages
// arrive in commit order with their content; an aborted append emits
// nothing; messages not deleted come back after the slot is taken again
// (re-published, not lost); deleted ones do not; no outbox row is
// written.
func TestWALMode(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	o, src := walOutbox(t, dsn)

	id := uuid.New()
	// One event with two messages, then 20 events with 20 messages (the
	// unnest statement), then messages without events.
	if err := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Topic: "Created", Data: []byte("{}")}},
		[]outbox.Message{walMsg(0, "a"), walMsg(1, "a")}); err != nil {
		t.Fatal(err)
	}
	var recs []eventstore.Record
	var msgs []outbox.Message
	for i := range 20 {
		recs = append(recs, eventstore.Record{StreamID: id, Position: uint64(i + 1), Topic: "T", Data: []byte("{}")})
		msgs = append(msgs, walMsg(2+i, "a"))
	}
	if err := o.AppendWithOutbox(ctx, recs, msgs); err != nil {
		t.Fatal(err)
	}
	// A conflicting append: nothing of it may be emitted.
	err := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Position: 3, Topic: "T", Data: []byte("{}")}},
		[]outbox.Message{walMsg(-1, "a")})
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("conflicting append: %v, want ErrConcurrency", err)
	}
	if err := o.AppendWithOutbox(ctx, nil, []outbox.Message{walMsg(22, "b"), {Topic: "esflow.T"}}); err != nil {
		t.Fatal(err)
	}

	fence, lost, release, err := src.LockFenced(ctx, outbox.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	if fence.Check() != nil {
		t.Fatal("fresh lease fenced")
	}
	got := fetchN(t, src, 24)
	if len(got) != 24 {
		t.Fatalf("got %d messages, want 24", len(got))
	}
	for i, m := range got[:23] {
		want := walMsg(i, "a")
		if i == 22 {
			want = walMsg(22, "b")
		}
		if m.Topic != want.Topic || !bytes.Equal(m.Key, want.Key) || !bytes.Equal(m.Value, want.Value) ||
			len(m.Headers) != 2 || string(m.Headers[0].Value) != fmt.Sprint(i) || m.Headers[1].Value == nil || m.CreatedAt.IsZero() {
			t.Fatalf("message %d = %+v, want %+v", i, m, want)
		}
		if i > 0 && m.ID <= got[i-1].ID {
			t.Fatalf("ids not ascending: %d after %d", m.ID, got[i-1].ID)
		}
	}
	if last := got[23]; last.Key != nil || last.Value != nil || last.Headers != nil {
		t.Fatalf("nil key, value and headers came back as %+v", last)
	}
	bl, err := src.Backlog(ctx, outbox.Shard{})
	if err != nil || bl.Messages != 24 {
		t.Fatalf("backlog = %+v, %v; want 24", bl, err)
	}
	// Publish (delete) the first 10 only, then give the slot up.
	ids := make([]int64, 10)
	for i := range ids {
		ids[i] = got[i].ID
	}
	if err := src.Delete(ctx, ids); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
		t.Fatal("lost while held")
	default:
	}
	release()
	if _, err := src.Fetch(ctx, outbox.Shard{}, 10); !errors.Is(err, postgres.ErrNotStreaming) {
		t.Fatalf("fetch after release: %v, want ErrNotStreaming", err)
	}

	// Taken again: the first transaction (messages 0 and 1) was fully
	// published and is not read again; the second one was not, so all
	// of its messages come back, and everything after it.
	_, _, release, err = src.LockFenced(ctx, outbox.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	again := fetchN(t, src, 22)
	if len(again) != 22 || string(again[0].Value) != `{"n":2}` {
		t.Fatalf("after the slot was taken again: %d messages starting with %s; want 22 from n=2", len(again), again[0].Value)
	}
	var rows int
	if err := o.Events().Pool().QueryRow(ctx, `SELECT count(*) FROM esflow_outbox`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("outbox rows = %d, %v; the WAL mode writes none", rows, err)
	}
	// Parking keeps the message in the table, counted as parked.
	if err := src.Park(ctx, again[0].ID, "too large"); err != nil {
		t.Fatal(err)
	}
	if n, err := o.Parked(ctx, outbox.Shard{}); err != nil || n != 1 {
		t.Fatalf("parked = %d, %v; want 1", n, err)
	}
	if _, _, err := src.Lock(ctx, outbox.Shard{Index: 0, Count: 2}); err == nil {
		t.Fatal("a shard of the WAL mode was accepted")
	}
}

// TestWALSlotLag checks the slot's lag as the metrics read it: WAL
// written while no relay confirms it is retained.
func TestWALSlotLag(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	o, src := walOutbox(t, dsn)
	_, before, _, err := src.SlotLag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := o.AppendWithOutbox(ctx, nil, []outbox.Message{walMsg(i, "k")}); err != nil {
			t.Fatal(err)
		}
	}
	retained, after, limit, err := src.SlotLag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after <= before || retained < after || limit == 0 {
		t.Fatalf("unconfirmed %d -> %d, retained %d, limit %d", before, after, retained, limit)
	}
}

func TestWALNeedsTheMode(t *testing.T) {
	o := open(t, pgtest.NewDatabase(t), postgres.Config{}, eventstore.Schema{})
	if _, err := o.WALSource(postgres.WALConfig{}); err == nil {
		t.Fatal("WALSource of a table-mode outbox")
	}
}
