package postgres_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

func idsOf(msgs []outbox.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// TestFetchExcept: FetchExcept skips exactly the given ids (in runs and
// alone), keeps id order and the limit, and Delete by runs removes exactly
// the given ids.
func TestFetchExcept(t *testing.T) {
	ctx := testCtx(t)
	o := open(t, pgtest.NewDatabase(t), postgres.Config{}, eventstore.Schema{})
	var msgs []outbox.Message
	for i := range 20 {
		msgs = append(msgs, outbox.Message{Topic: "t", Key: []byte(fmt.Sprint("k", i%3)), Value: []byte(fmt.Sprint(i))})
	}
	if err := o.AppendWithOutbox(ctx, nil, msgs); err != nil {
		t.Fatal(err)
	}
	all, err := o.Fetch(ctx, outbox.Shard{}, 100)
	if err != nil || len(all) != 20 {
		t.Fatalf("Fetch: %d messages, %v", len(all), err)
	}
	id := idsOf(all)
	// Runs [0,4], [6], [9,10] and a lone unknown id.
	except := []int64{id[0], id[1], id[2], id[3], id[4], id[6], id[9], id[10], id[19] + 1000}
	got, err := o.FetchExcept(ctx, outbox.Shard{}, 5, except)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{id[5], id[7], id[8], id[11], id[12]}; !slices.Equal(idsOf(got), want) {
		t.Fatalf("FetchExcept = %v, want %v", idsOf(got), want)
	}
	// One run: the rows below and above it.
	got, err = o.FetchExcept(ctx, outbox.Shard{}, 6, []int64{id[5], id[3], id[4], id[2]})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{id[0], id[1], id[6], id[7], id[8], id[9]}; !slices.Equal(idsOf(got), want) {
		t.Fatalf("FetchExcept one run = %v, want %v", idsOf(got), want)
	}
	// Per shard as well.
	sh := outbox.Shard{Index: 1, Count: 2}
	inShard, err := o.Fetch(ctx, sh, 100)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := o.FetchExcept(ctx, sh, 100, idsOf(inShard[:1]))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idsOf(rest), idsOf(inShard[1:])) {
		t.Fatalf("FetchExcept in shard = %v, want %v", idsOf(rest), idsOf(inShard[1:]))
	}

	// Delete a run, a lone id and an unknown one.
	if err := o.Delete(ctx, []int64{id[2], id[3], id[4], id[7], id[19] + 5}); err != nil {
		t.Fatal(err)
	}
	left, err := o.Fetch(ctx, outbox.Shard{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(id[:2], id[5:7], id[8:])
	if !slices.Equal(idsOf(left), want) {
		t.Fatalf("after Delete: %v, want %v", idsOf(left), want)
	}
}

// TestFetchColumns: what Fetch reads raw equals what pgx scans, for NULL,
// empty and binary columns, and created_at is the stored instant.
func TestFetchColumns(t *testing.T) {
	ctx := testCtx(t)
	o := open(t, pgtest.NewDatabase(t), postgres.Config{}, eventstore.Schema{})
	in := []outbox.Message{
		{Topic: "a", Key: nil, Value: nil},
		{Topic: "a", Key: []byte{}, Value: []byte{}},
		{Topic: "b", Key: []byte{0, 0xff}, Value: []byte("v\x00"), Headers: []outbox.Header{{Key: "h", Value: []byte{1}}}},
	}
	if err := o.AppendWithOutbox(ctx, nil, in); err != nil {
		t.Fatal(err)
	}
	got, err := o.Fetch(ctx, outbox.Shard{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("%d messages, want %d", len(got), len(in))
	}
	pool := o.Events().Pool()
	for i, m := range got {
		var key, value []byte
		var created time.Time
		if err := pool.QueryRow(ctx, `SELECT key, value, created_at FROM esflow_outbox WHERE id = $1`, m.ID).Scan(&key, &value, &created); err != nil {
			t.Fatal(err)
		}
		if m.Topic != in[i].Topic || (m.Key == nil) != (key == nil) || string(m.Key) != string(key) ||
			(m.Value == nil) != (value == nil) || string(m.Value) != string(value) || !m.CreatedAt.Equal(created) {
			t.Errorf("message %d = %q %q %q %v; scanned %q %q %v", i, m.Topic, m.Key, m.Value, m.CreatedAt, key, value, created)
		}
	}
	if h := got[2].Header("h"); string(h) != "\x01" {
		t.Errorf("header h = %q", h)
	}
}
