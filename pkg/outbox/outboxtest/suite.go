// Package outboxtest is the conformance suite every outbox backend
// (pkg/outbox/memory, pkg/outbox/sqlite, pkg/outbox/postgres) must pass.
//
//	func TestConformance(t *testing.T) {
//		outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
//			return newOutbox(t) // fresh, migrated, cleaned up by t.Cleanup
//		})
//	}
package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// Backend is what an outbox backend offers: an event store that writes
// outbox messages atomically with records, and the relay's side of it.
type Backend interface {
	eventstore.OutboxRecorder
	outbox.Source
	outbox.Locker
	outbox.Waker
}

// ParkedCounter is implemented by backends that report how many messages
// of a shard are parked; the suite checks it when present.
type ParkedCounter interface {
	Parked(ctx context.Context, shard outbox.Shard) (int64, error)
}

// Run runs the whole suite. Each subtest gets a fresh backend from
// factory, which must register its own cleanup with t.Cleanup.
func Run(t *testing.T, factory func(t *testing.T) Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b Backend)
	}{
		{"AtomicEventsAndMessages", testAtomic},
		{"MessagesOnly", testMessagesOnly},
		{"EventsOnly", testEventsOnly},
		{"UnroutableRefused", testUnroutable},
		{"FetchOrderAndLimit", testFetchOrder},
		{"RoundTrip", testRoundTrip},
		{"ShardFiltering", testShards},
		{"Delete", testDelete},
		{"Park", testPark},
		{"BacklogOldest", testBacklogOldest},
		{"InvalidShard", testInvalidShard},
		{"LockExclusive", testLockExclusive},
		{"LockContextCancel", testLockCancel},
		{"WakeAfterCommit", testWake},
		{"ConcurrentAppenders", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, factory(t))
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func record(id uuid.UUID, pos uint64) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: "Happened", Data: []byte(fmt.Sprintf(`{"v":%d}`, pos))}
}

func message(key string, n int) outbox.Message {
	return outbox.Message{
		Topic: "esflow.Test",
		Key:   []byte(key),
		Value: []byte("value-" + strconv.Itoa(n)),
		Headers: []outbox.Header{
			{Key: "n", Value: []byte(strconv.Itoa(n))},
			{Key: "bin", Value: []byte{0, 1, 2, 255}},
		},
	}
}

func mustAppend(t *testing.T, b Backend, recs []eventstore.Record, msgs []outbox.Message) {
	t.Helper()
	if err := b.AppendWithOutbox(testContext(t), recs, msgs); err != nil {
		t.Fatalf("AppendWithOutbox: %v", err)
	}
}

func fetchAll(t *testing.T, b Backend, shard outbox.Shard) []outbox.Message {
	t.Helper()
	msgs, err := b.Fetch(testContext(t), shard, 1_000_000)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return msgs
}

func backlog(t *testing.T, b Backend, shard outbox.Shard) outbox.Backlog {
	t.Helper()
	bl, err := b.Backlog(testContext(t), shard)
	if err != nil {
		t.Fatalf("Backlog: %v", err)
	}
	return bl
}

func ids(msgs []outbox.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func values(msgs []outbox.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Value)
	}
	return out
}

func testAtomic(t *testing.T, b Backend) {
	ctx := testContext(t)
	a := uuid.New()
	mustAppend(t, b, []eventstore.Record{record(a, 0), record(a, 1)}, []outbox.Message{message(a.String(), 0), message(a.String(), 1)})
	before := backlog(t, b, outbox.Shard{})
	if before.Messages != 2 {
		t.Fatalf("backlog after first append = %d, want 2", before.Messages)
	}

	// Position 1 is taken: the batch conflicts and writes nothing.
	other := uuid.New()
	err := b.AppendWithOutbox(ctx, []eventstore.Record{record(other, 0), record(a, 1)}, []outbox.Message{message(other.String(), 9), message(a.String(), 9)})
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("conflicting append: err = %v, want ErrConcurrency", err)
	}
	// A first position beyond the stream's end conflicts too.
	err = b.AppendWithOutbox(ctx, []eventstore.Record{record(a, 5)}, []outbox.Message{message(a.String(), 10)})
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("append beyond end: err = %v, want ErrConcurrency", err)
	}
	if after := backlog(t, b, outbox.Shard{}); after.Messages != before.Messages || !after.Oldest.Equal(before.Oldest) {
		t.Fatalf("backlog after conflicts = %+v, want %+v", after, before)
	}
	if got := values(fetchAll(t, b, outbox.Shard{})); !slices.Equal(got, []string{"value-0", "value-1"}) {
		t.Fatalf("messages after conflicts = %v", got)
	}
	recs, err := b.ReadStream(ctx, other, eventstore.StreamQuery{})
	if err != nil || len(recs) != 0 {
		t.Fatalf("stream of the refused batch: %d records, %v; want none", len(recs), err)
	}
	recs, err = b.ReadStream(ctx, a, eventstore.StreamQuery{})
	if err != nil || len(recs) != 2 {
		t.Fatalf("ReadStream = %d records, %v; want 2", len(recs), err)
	}
	// An invalid batch is refused before writing.
	err = b.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: uuid.Nil, Topic: "x"}}, []outbox.Message{message("k", 1)})
	if !errors.Is(err, eventstore.ErrInvalidRecord) {
		t.Fatalf("invalid record: err = %v, want ErrInvalidRecord", err)
	}
	if n := backlog(t, b, outbox.Shard{}).Messages; n != 2 {
		t.Fatalf("backlog after invalid batch = %d, want 2", n)
	}
}

func testMessagesOnly(t *testing.T, b Backend) {
	ctx := testContext(t)
	mustAppend(t, b, nil, []outbox.Message{message("k", 1), message("k", 2)})
	if got := values(fetchAll(t, b, outbox.Shard{})); !slices.Equal(got, []string{"value-1", "value-2"}) {
		t.Fatalf("messages = %v", got)
	}
	max, err := b.MaxNotificationID(ctx)
	if err != nil || max != 0 {
		t.Fatalf("MaxNotificationID = %d, %v; want 0 (no records)", max, err)
	}
	if err := b.AppendWithOutbox(ctx, nil, nil); err != nil {
		t.Fatalf("empty AppendWithOutbox: %v", err)
	}
}

func testEventsOnly(t *testing.T, b Backend) {
	ctx := testContext(t)
	a := uuid.New()
	mustAppend(t, b, []eventstore.Record{record(a, 0)}, nil)
	if err := b.Append(ctx, []eventstore.Record{record(a, 1)}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	recs, err := b.ReadStream(ctx, a, eventstore.StreamQuery{})
	if err != nil || len(recs) != 2 {
		t.Fatalf("ReadStream = %d records, %v; want 2", len(recs), err)
	}
	if n := backlog(t, b, outbox.Shard{}).Messages; n != 0 {
		t.Fatalf("backlog = %d, want 0", n)
	}
	notes, err := b.ReadNotifications(ctx, eventstore.NotificationQuery{Start: 1, Limit: 10})
	if err != nil || len(notes) != 2 {
		t.Fatalf("ReadNotifications = %d, %v; want 2", len(notes), err)
	}
}

func testUnroutable(t *testing.T, b Backend) {
	ctx := testContext(t)
	a := uuid.New()
	bad := message("k", 1)
	bad.Topic = ""
	err := b.AppendWithOutbox(ctx, []eventstore.Record{record(a, 0)}, []outbox.Message{message("k", 0), bad})
	if !errors.Is(err, outbox.ErrUnroutable) {
		t.Fatalf("empty topic: err = %v, want ErrUnroutable", err)
	}
	if n := backlog(t, b, outbox.Shard{}).Messages; n != 0 {
		t.Fatalf("backlog = %d, want 0", n)
	}
	recs, err := b.ReadStream(ctx, a, eventstore.StreamQuery{})
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadStream = %d records, %v; want none", len(recs), err)
	}
}

func testFetchOrder(t *testing.T, b Backend) {
	ctx := testContext(t)
	var want []string
	for i := range 5 {
		var batch []outbox.Message
		for j := range 3 {
			n := i*3 + j
			batch = append(batch, message("key-"+strconv.Itoa(n%4), n))
			want = append(want, "value-"+strconv.Itoa(n))
		}
		mustAppend(t, b, nil, batch)
	}
	all := fetchAll(t, b, outbox.Shard{})
	if got := values(all); !slices.Equal(got, want) {
		t.Fatalf("Fetch order = %v, want %v", got, want)
	}
	if !slices.IsSorted(ids(all)) {
		t.Fatalf("ids not ascending: %v", ids(all))
	}
	first, err := b.Fetch(ctx, outbox.Shard{}, 4)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if got := values(first); !slices.Equal(got, want[:4]) {
		t.Fatalf("Fetch limit 4 = %v, want %v", got, want[:4])
	}
	// Fetch does not consume.
	again, err := b.Fetch(ctx, outbox.Shard{Index: 0, Count: 1}, 4)
	if err != nil || !slices.Equal(ids(again), ids(first)) {
		t.Fatalf("second Fetch = %v, %v; want %v", ids(again), err, ids(first))
	}
}

func testRoundTrip(t *testing.T, b Backend) {
	in := outbox.Message{
		Topic:   "orders.v1",
		Key:     []byte("k\x00ey"),
		Value:   []byte(`{"a":1}`),
		Headers: []outbox.Header{{Key: "content-type", Value: []byte("application/json")}, {Key: "empty", Value: []byte{}}, {Key: "bin", Value: []byte{0xff, 0}}},
	}
	start := time.Now()
	mustAppend(t, b, nil, []outbox.Message{in, {Topic: "bare", Key: []byte("x")}})
	got := fetchAll(t, b, outbox.Shard{})
	if len(got) != 2 {
		t.Fatalf("fetched %d messages, want 2", len(got))
	}
	m := got[0]
	if m.ID <= 0 || m.Topic != in.Topic || string(m.Key) != string(in.Key) || string(m.Value) != string(in.Value) {
		t.Fatalf("message = %+v, want %+v", m, in)
	}
	if len(m.Headers) != len(in.Headers) {
		t.Fatalf("headers = %+v, want %+v", m.Headers, in.Headers)
	}
	for i, h := range in.Headers {
		if m.Headers[i].Key != h.Key || string(m.Headers[i].Value) != string(h.Value) {
			t.Fatalf("header %d = %+v, want %+v", i, m.Headers[i], h)
		}
	}
	if m.CreatedAt.IsZero() || m.CreatedAt.Before(start.Add(-time.Minute)) || m.CreatedAt.After(time.Now().Add(time.Minute)) {
		t.Fatalf("CreatedAt = %v, want about %v", m.CreatedAt, start)
	}
	if len(got[1].Headers) != 0 || len(got[1].Value) != 0 || got[1].Topic != "bare" {
		t.Fatalf("bare message = %+v", got[1])
	}
}

func testShards(t *testing.T, b Backend) {
	const keys, perKey, count = 40, 3, 4
	var batch []outbox.Message
	for k := range keys {
		for i := range perKey {
			batch = append(batch, message("key-"+strconv.Itoa(k), k*perKey+i))
		}
	}
	mustAppend(t, b, nil, batch)
	all := fetchAll(t, b, outbox.Shard{})
	if len(all) != keys*perKey {
		t.Fatalf("whole outbox has %d messages, want %d", len(all), keys*perKey)
	}
	shardOf := map[string]int{}
	seen := map[int64]bool{}
	var total int64
	for i := range count {
		sh := outbox.Shard{Index: i, Count: count}
		msgs := fetchAll(t, b, sh)
		if !slices.IsSorted(ids(msgs)) {
			t.Fatalf("shard %d not in id order", i)
		}
		for _, m := range msgs {
			if !sh.Contains(outbox.KeyHash(m.Key)) {
				t.Fatalf("shard %d returned key %q of another shard", i, m.Key)
			}
			if prev, ok := shardOf[string(m.Key)]; ok && prev != i {
				t.Fatalf("key %q in shards %d and %d", m.Key, prev, i)
			}
			shardOf[string(m.Key)] = i
			if seen[m.ID] {
				t.Fatalf("message %d in two shards", m.ID)
			}
			seen[m.ID] = true
		}
		bl := backlog(t, b, sh)
		if bl.Messages != int64(len(msgs)) {
			t.Fatalf("shard %d backlog = %d, fetched %d", i, bl.Messages, len(msgs))
		}
		total += bl.Messages
	}
	if len(seen) != len(all) || total != int64(len(all)) {
		t.Fatalf("union of shards = %d messages (backlogs %d), want %d", len(seen), total, len(all))
	}
	if len(shardOf) != keys {
		t.Fatalf("%d keys seen, want %d", len(shardOf), keys)
	}
}

func testDelete(t *testing.T, b Backend) {
	ctx := testContext(t)
	var batch []outbox.Message
	for i := range 6 {
		batch = append(batch, message("k", i))
	}
	mustAppend(t, b, nil, batch)
	all := fetchAll(t, b, outbox.Shard{})
	if err := b.Delete(ctx, []int64{all[0].ID, all[2].ID, all[3].ID}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := b.Delete(ctx, nil); err != nil {
		t.Fatalf("Delete(nil): %v", err)
	}
	// Deleting again (a retried ack) is harmless.
	if err := b.Delete(ctx, []int64{all[0].ID, 1 << 50}); err != nil {
		t.Fatalf("Delete again: %v", err)
	}
	got := ids(fetchAll(t, b, outbox.Shard{}))
	want := []int64{all[1].ID, all[4].ID, all[5].ID}
	if !slices.Equal(got, want) {
		t.Fatalf("after Delete: %v, want %v", got, want)
	}
	if n := backlog(t, b, outbox.Shard{}).Messages; n != 3 {
		t.Fatalf("backlog = %d, want 3", n)
	}
}

func testPark(t *testing.T, b Backend) {
	ctx := testContext(t)
	mustAppend(t, b, nil, []outbox.Message{message("a", 0), message("a", 1), message("b", 2)})
	all := fetchAll(t, b, outbox.Shard{})
	if err := b.Park(ctx, all[0].ID, "message too large"); err != nil {
		t.Fatalf("Park: %v", err)
	}
	got := ids(fetchAll(t, b, outbox.Shard{}))
	if !slices.Equal(got, []int64{all[1].ID, all[2].ID}) {
		t.Fatalf("after Park: %v", got)
	}
	bl := backlog(t, b, outbox.Shard{})
	if bl.Messages != 2 {
		t.Fatalf("backlog counts parked: %d, want 2", bl.Messages)
	}
	if pc, ok := b.(ParkedCounter); ok {
		n, err := pc.Parked(ctx, outbox.Shard{})
		if err != nil || n != 1 {
			t.Fatalf("Parked = %d, %v; want 1", n, err)
		}
	}
	if err := b.Park(ctx, 1<<50, "gone"); err == nil {
		t.Fatalf("Park of an unknown id succeeded")
	}
}

func testBacklogOldest(t *testing.T, b Backend) {
	if bl := backlog(t, b, outbox.Shard{}); bl.Messages != 0 || !bl.Oldest.IsZero() {
		t.Fatalf("empty backlog = %+v", bl)
	}
	mustAppend(t, b, nil, []outbox.Message{message("a", 0)})
	time.Sleep(20 * time.Millisecond)
	mustAppend(t, b, nil, []outbox.Message{message("a", 1)})
	all := fetchAll(t, b, outbox.Shard{})
	bl := backlog(t, b, outbox.Shard{})
	if bl.Messages != 2 || !bl.Oldest.Equal(all[0].CreatedAt) {
		t.Fatalf("backlog = %+v, want 2 with oldest %v", bl, all[0].CreatedAt)
	}
	if !all[1].CreatedAt.After(all[0].CreatedAt) {
		t.Fatalf("CreatedAt not increasing: %v, %v", all[0].CreatedAt, all[1].CreatedAt)
	}
	if err := b.Delete(testContext(t), []int64{all[0].ID}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if bl := backlog(t, b, outbox.Shard{}); bl.Messages != 1 || !bl.Oldest.Equal(all[1].CreatedAt) {
		t.Fatalf("backlog after delete = %+v, want oldest %v", bl, all[1].CreatedAt)
	}
}

func testInvalidShard(t *testing.T, b Backend) {
	ctx := testContext(t)
	bad := outbox.Shard{Index: 4, Count: 4}
	if _, err := b.Fetch(ctx, bad, 10); err == nil {
		t.Errorf("Fetch of an invalid shard succeeded")
	}
	if _, err := b.Backlog(ctx, bad); err == nil {
		t.Errorf("Backlog of an invalid shard succeeded")
	}
	if _, err := b.Fetch(ctx, outbox.Shard{}, 0); err == nil {
		t.Errorf("Fetch with limit 0 succeeded")
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func testLockExclusive(t *testing.T, b Backend) {
	ctx := testContext(t)
	shard := outbox.Shard{Index: 1, Count: 3}
	lost, release, err := b.Lock(ctx, shard)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	// Another shard is independent.
	_, releaseOther, err := b.Lock(ctx, outbox.Shard{Index: 2, Count: 3})
	if err != nil {
		t.Fatalf("Lock of another shard: %v", err)
	}
	releaseOther()

	got := make(chan func(), 1)
	errc := make(chan error, 1)
	go func() {
		lost2, release2, err := b.Lock(ctx, shard)
		if err != nil {
			errc <- err
			return
		}
		if isClosed(lost2) {
			errc <- errors.New("second holder's lost channel is closed")
		}
		got <- release2
	}()
	select {
	case <-got:
		t.Fatalf("second Lock succeeded while the first holds the shard")
	case err := <-errc:
		t.Fatalf("second Lock: %v", err)
	case <-time.After(700 * time.Millisecond):
	}
	if isClosed(lost) {
		t.Fatalf("lost closed while the lock is held")
	}
	release()
	select {
	case release2 := <-got:
		release2()
		release2() // idempotent
	case err := <-errc:
		t.Fatalf("second Lock: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("second Lock did not succeed after release")
	}
	release() // idempotent
}

func testLockCancel(t *testing.T, b Backend) {
	ctx := testContext(t)
	_, release, err := b.Lock(ctx, outbox.Shard{})
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer release()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, rel, err := b.Lock(short, outbox.Shard{}); err == nil {
		rel()
		t.Fatalf("Lock of a held shard succeeded")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock error = %v, want one matching context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Lock returned %v after its context ended", d)
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func testWake(t *testing.T, b Backend) {
	ctx, cancel := context.WithCancel(testContext(t))
	wake, err := b.Wake(ctx)
	if err != nil {
		t.Fatalf("Wake: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	drain(wake)
	a := uuid.New()
	mustAppend(t, b, []eventstore.Record{record(a, 0)}, []outbox.Message{message(a.String(), 0)})
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake-up after a committed append")
	}
	// A burst of commits wakes at least once more.
	for i := 1; i <= 20; i++ {
		mustAppend(t, b, []eventstore.Record{record(a, uint64(i))}, []outbox.Message{message(a.String(), i)})
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake-up after a burst of appends")
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-wake:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("wake channel not closed after ctx ended")
		}
	}
}

// testConcurrent runs writers that race for the same aggregates, then
// drains the outbox shard by shard: every committed message is fetched
// exactly once, and each key's messages come in version order.
func testConcurrent(t *testing.T, b Backend) {
	ctx := testContext(t)
	const writers, aggregates, appendsPerWriter, shards = 8, 6, 25, 3
	aggs := make([]uuid.UUID, aggregates)
	for i := range aggs {
		aggs[i] = uuid.New()
	}
	var committed sync.Map // key "agg/version" -> true
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for done := 0; done < appendsPerWriter; {
				a := aggs[rng.IntN(aggregates)]
				recs, err := b.ReadStream(ctx, a, eventstore.StreamQuery{})
				if err != nil {
					errc <- fmt.Errorf("ReadStream: %w", err)
					return
				}
				v := uint64(len(recs))
				msg := outbox.Message{Topic: "esflow.Test", Key: []byte(a.String()), Value: []byte(strconv.FormatUint(v, 10))}
				err = b.AppendWithOutbox(ctx, []eventstore.Record{record(a, v)}, []outbox.Message{msg})
				if errors.Is(err, eventstore.ErrConcurrency) {
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("AppendWithOutbox: %w", err)
					return
				}
				committed.Store(fmt.Sprintf("%s/%d", a, v), true)
				done++
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	seen := map[int64]bool{}
	next := map[string]uint64{}
	fetched := 0
	for i := range shards {
		sh := outbox.Shard{Index: i, Count: shards}
		for {
			msgs, err := b.Fetch(ctx, sh, 7)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if len(msgs) == 0 {
				break
			}
			for _, m := range msgs {
				if seen[m.ID] {
					t.Fatalf("message %d fetched twice", m.ID)
				}
				seen[m.ID] = true
				v, err := strconv.ParseUint(string(m.Value), 10, 64)
				if err != nil {
					t.Fatalf("message value %q: %v", m.Value, err)
				}
				if v != next[string(m.Key)] {
					t.Fatalf("key %s: version %d fetched, want %d (id order must follow version order)", m.Key, v, next[string(m.Key)])
				}
				next[string(m.Key)] = v + 1
				if _, ok := committed.Load(fmt.Sprintf("%s/%d", m.Key, v)); !ok {
					t.Fatalf("message for %s/%d was not committed", m.Key, v)
				}
				fetched++
			}
			if err := b.Delete(ctx, ids(msgs)); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}
	}
	if fetched != writers*appendsPerWriter {
		t.Fatalf("fetched %d messages, want %d", fetched, writers*appendsPerWriter)
	}
	for _, a := range aggs {
		recs, err := b.ReadStream(ctx, a, eventstore.StreamQuery{})
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		if uint64(len(recs)) != next[a.String()] {
			t.Fatalf("aggregate %s has %d events but %d messages", a, len(recs), next[a.String()])
		}
	}
	if bl := backlog(t, b, outbox.Shard{}); bl.Messages != 0 {
		t.Fatalf("backlog after draining = %d", bl.Messages)
	}
}
