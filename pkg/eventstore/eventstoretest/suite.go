// Package eventstoretest is the conformance suite every
// [eventstore.Recorder] must pass. A backend proves itself with one call:
//
//	func TestConformance(t *testing.T) {
//		eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder {
//			return newEmptyStore(t)
//		})
//	}
//
// The factory must return an empty recorder for each call. Snapshot tests
// run when the recorder also implements [eventstore.SnapshotRecorder].
package eventstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// Run runs the whole suite. Each subtest gets a fresh recorder.
func Run(t *testing.T, newRecorder func(t *testing.T) eventstore.Recorder) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, r eventstore.Recorder)
	}{
		{"AppendAndReadStream", testAppendAndRead},
		{"StreamRanges", testStreamRanges},
		{"UnknownStreamIsEmpty", testUnknownStream},
		{"ConcurrencyExistingPosition", testConflictExisting},
		{"ConcurrencyBeyondEnd", testConflictBeyondEnd},
		{"ConflictWritesNothingOfBatch", testConflictAtomic},
		{"InvalidBatch", testInvalidBatch},
		{"ManyStreamsAtomically", testManyStreams},
		{"Notifications", testNotifications},
		{"NotificationTopicFilter", testNotificationTopics},
		{"NotificationIDsContiguousAfterConflicts", testNotificationNoGaps},
		{"BinaryDataRoundTrip", testBinaryData},
		{"RacingWritersOneWinner", testRacingWriters},
		{"ConcurrentTailNeverSkips", testConcurrentTail},
		{"ConcurrentBatchesContiguous", testConcurrentBatchesContiguous},
		{"Snapshots", testSnapshots},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newRecorder(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func rec(id uuid.UUID, pos uint64, topic, data string) eventstore.Record {
	return eventstore.Record{StreamID: id, Position: pos, Topic: topic, Data: []byte(data)}
}

func stream(id uuid.UUID, from, n uint64) []eventstore.Record {
	out := make([]eventstore.Record, 0, n)
	for p := from; p < from+n; p++ {
		out = append(out, rec(id, p, fmt.Sprintf("Topic%d", p%3), fmt.Sprintf(`{"n":%d}`, p)))
	}
	return out
}

func mustAppend(t *testing.T, r eventstore.Recorder, recs []eventstore.Record) {
	t.Helper()
	if err := r.Append(ctx(t), recs); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func read(t *testing.T, r eventstore.Recorder, id uuid.UUID, q eventstore.StreamQuery) []eventstore.Record {
	t.Helper()
	got, err := r.ReadStream(ctx(t), id, q)
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	return got
}

func positions(recs []eventstore.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Position
	}
	return out
}

func equalU(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testAppendAndRead(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, []eventstore.Record{rec(id, 0, "Created", `{"foo":"bar"}`)})
	mustAppend(t, r, []eventstore.Record{rec(id, 1, "AttributeChanged", `{"name":"foo","value":"baz"}`)})
	got := read(t, r, id, eventstore.StreamQuery{})
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	for i, want := range []eventstore.Record{rec(id, 0, "Created", `{"foo":"bar"}`), rec(id, 1, "AttributeChanged", `{"name":"foo","value":"baz"}`)} {
		g := got[i]
		if g.StreamID != want.StreamID || g.Position != want.Position || g.Topic != want.Topic || !bytes.Equal(g.Data, want.Data) {
			t.Errorf("record %d = %+v, want %+v", i, g, want)
		}
	}
}

func u(v uint64) *uint64 { return &v }

func testStreamRanges(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, stream(id, 0, 10))
	mustAppend(t, r, stream(uuid.New(), 0, 3)) // another stream must not leak in
	cases := []struct {
		name string
		q    eventstore.StreamQuery
		want []uint64
	}{
		{"all", eventstore.StreamQuery{}, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"after", eventstore.StreamQuery{After: u(6)}, []uint64{7, 8, 9}},
		{"up to inclusive", eventstore.StreamQuery{UpTo: u(2)}, []uint64{0, 1, 2}},
		{"after and up to", eventstore.StreamQuery{After: u(2), UpTo: u(5)}, []uint64{3, 4, 5}},
		{"limit", eventstore.StreamQuery{Limit: 4}, []uint64{0, 1, 2, 3}},
		{"after with limit", eventstore.StreamQuery{After: u(0), Limit: 2}, []uint64{1, 2}},
		{"descending", eventstore.StreamQuery{Descending: true}, []uint64{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}},
		{"descending limit keeps last", eventstore.StreamQuery{Descending: true, Limit: 3}, []uint64{9, 8, 7}},
		{"descending up to", eventstore.StreamQuery{Descending: true, UpTo: u(4), Limit: 2}, []uint64{4, 3}},
		{"empty range", eventstore.StreamQuery{After: u(9)}, []uint64{}},
		{"after zero at zero", eventstore.StreamQuery{After: u(0), UpTo: u(0)}, []uint64{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := positions(read(t, r, id, c.q)); !equalU(got, c.want) {
				t.Errorf("positions = %v, want %v", got, c.want)
			}
		})
	}
}

func testUnknownStream(t *testing.T, r eventstore.Recorder) {
	if got := read(t, r, uuid.New(), eventstore.StreamQuery{}); len(got) != 0 {
		t.Fatalf("unknown stream returned %d records", len(got))
	}
	n, err := r.MaxNotificationID(ctx(t))
	if err != nil || n != 0 {
		t.Fatalf("MaxNotificationID on empty store = %d, %v; want 0, nil", n, err)
	}
}

func wantConflict(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("err = %v, want ErrConcurrency", err)
	}
}

func testConflictExisting(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, stream(id, 0, 3))
	err := r.Append(ctx(t), []eventstore.Record{rec(id, 2, "Stale", `{"stale":true}`), rec(id, 3, "Stale", `{}`)})
	wantConflict(t, err)
	var se *eventstore.Error
	if !errors.As(err, &se) || se.StreamID != id {
		t.Errorf("err = %#v, want *eventstore.Error naming stream %s", err, id)
	}
	got := read(t, r, id, eventstore.StreamQuery{})
	if !equalU(positions(got), []uint64{0, 1, 2}) || got[2].Topic == "Stale" {
		t.Fatalf("conflicting append changed the stream: %v", got)
	}
}

func testConflictBeyondEnd(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	wantConflict(t, r.Append(ctx(t), []eventstore.Record{rec(id, 1, "Gap", `{}`)}))
	mustAppend(t, r, stream(id, 0, 2))
	wantConflict(t, r.Append(ctx(t), []eventstore.Record{rec(id, 5, "Gap", `{}`)}))
	if got := positions(read(t, r, id, eventstore.StreamQuery{})); !equalU(got, []uint64{0, 1}) {
		t.Fatalf("positions = %v, want [0 1]", got)
	}
}

func testConflictAtomic(t *testing.T, r eventstore.Recorder) {
	a, b := uuid.New(), uuid.New()
	mustAppend(t, r, stream(b, 0, 1))
	before, err := r.MaxNotificationID(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	batch := append(stream(a, 0, 3), rec(b, 0, "Conflict", `{}`))
	wantConflict(t, r.Append(ctx(t), batch))
	if got := read(t, r, a, eventstore.StreamQuery{}); len(got) != 0 {
		t.Fatalf("stream a has %d records after a failed batch, want 0", len(got))
	}
	after, err := r.MaxNotificationID(ctx(t))
	if err != nil || after != before {
		t.Fatalf("MaxNotificationID = %d, %v; want %d", after, err, before)
	}
}

func testInvalidBatch(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	cases := []struct {
		name string
		recs []eventstore.Record
		want error
	}{
		{"nil stream id", []eventstore.Record{rec(uuid.Nil, 0, "T", "{}")}, eventstore.ErrInvalidRecord},
		{"empty topic", []eventstore.Record{rec(id, 0, "", "{}")}, eventstore.ErrInvalidRecord},
		{"non contiguous", []eventstore.Record{rec(id, 0, "T", "{}"), rec(id, 2, "T", "{}")}, eventstore.ErrInvalidRecord},
		{"repeated position", []eventstore.Record{rec(id, 0, "T", "{}"), rec(id, 0, "T", "{}")}, eventstore.ErrInvalidRecord},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := r.Append(ctx(t), c.recs); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	if got := read(t, r, id, eventstore.StreamQuery{}); len(got) != 0 {
		t.Fatalf("invalid batches wrote %d records", len(got))
	}
	if err := r.Append(ctx(t), nil); err != nil {
		t.Fatalf("empty append: %v", err)
	}
}

func testManyStreams(t *testing.T, r eventstore.Recorder) {
	a, b := uuid.New(), uuid.New()
	mustAppend(t, r, append(stream(a, 0, 2), stream(b, 0, 3)...))
	mustAppend(t, r, append(stream(b, 3, 1), stream(a, 2, 2)...))
	if got := positions(read(t, r, a, eventstore.StreamQuery{})); !equalU(got, []uint64{0, 1, 2, 3}) {
		t.Errorf("a = %v", got)
	}
	if got := positions(read(t, r, b, eventstore.StreamQuery{})); !equalU(got, []uint64{0, 1, 2, 3}) {
		t.Errorf("b = %v", got)
	}
}

func readAll(t *testing.T, r eventstore.Recorder, topics ...string) []eventstore.Notification {
	t.Helper()
	var out []eventstore.Notification
	next := uint64(1)
	for {
		ns, err := r.ReadNotifications(ctx(t), eventstore.NotificationQuery{Start: next, Limit: 3, Topics: topics})
		if err != nil {
			t.Fatalf("ReadNotifications: %v", err)
		}
		if len(ns) == 0 {
			return out
		}
		out = append(out, ns...)
		next = ns[len(ns)-1].ID + 1
	}
}

func testNotifications(t *testing.T, r eventstore.Recorder) {
	a, b := uuid.New(), uuid.New()
	mustAppend(t, r, stream(a, 0, 2))
	mustAppend(t, r, stream(b, 0, 3))
	mustAppend(t, r, stream(a, 2, 2))
	ns := readAll(t, r)
	if len(ns) != 7 {
		t.Fatalf("got %d notifications, want 7", len(ns))
	}
	wantStreams := []uuid.UUID{a, a, b, b, b, a, a}
	wantPos := []uint64{0, 1, 0, 1, 2, 2, 3}
	for i, n := range ns {
		if n.ID != uint64(i+1) {
			t.Errorf("notification %d has ID %d, want %d", i, n.ID, i+1)
		}
		if n.StreamID != wantStreams[i] || n.Position != wantPos[i] {
			t.Errorf("notification %d = (%s,%d), want (%s,%d)", n.ID, n.StreamID, n.Position, wantStreams[i], wantPos[i])
		}
		if n.Topic == "" || len(n.Data) == 0 {
			t.Errorf("notification %d lacks topic or data", n.ID)
		}
	}
	section, err := r.ReadNotifications(ctx(t), eventstore.NotificationQuery{Start: 3, Limit: 2})
	if err != nil || len(section) != 2 || section[0].ID != 3 || section[1].ID != 4 {
		t.Fatalf("section 3,4 = %v, %v", section, err)
	}
	if max, err := r.MaxNotificationID(ctx(t)); err != nil || max != 7 {
		t.Fatalf("MaxNotificationID = %d, %v; want 7", max, err)
	}
	if _, err := r.ReadNotifications(ctx(t), eventstore.NotificationQuery{Start: 1, Limit: 0}); err == nil {
		t.Errorf("Limit 0 accepted; want an error")
	}
}

func testNotificationTopics(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, stream(id, 0, 9)) // topics cycle Topic0, Topic1, Topic2
	ns := readAll(t, r, "Topic1", "Topic2")
	if len(ns) != 6 {
		t.Fatalf("got %d notifications, want 6", len(ns))
	}
	for _, n := range ns {
		if n.Topic == "Topic0" {
			t.Errorf("filtered topic returned: %+v", n)
		}
		if n.ID != n.Position+1 {
			t.Errorf("notification id %d for position %d: filtering must keep global ids", n.ID, n.Position)
		}
	}
}

func testNotificationNoGaps(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, stream(id, 0, 2))
	for i := 0; i < 3; i++ {
		wantConflict(t, r.Append(ctx(t), stream(id, 1, 2)))
	}
	mustAppend(t, r, stream(id, 2, 2))
	ns := readAll(t, r)
	for i, n := range ns {
		if n.ID != uint64(i+1) {
			t.Fatalf("notification ids %v: want 1..%d without gaps", ids(ns), len(ns))
		}
	}
	if len(ns) != 4 {
		t.Fatalf("got %d notifications, want 4", len(ns))
	}
}

func ids(ns []eventstore.Notification) []uint64 {
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func testBinaryData(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	mustAppend(t, r, []eventstore.Record{{StreamID: id, Position: 0, Topic: "Bin", Data: data}})
	got := read(t, r, id, eventstore.StreamQuery{})
	if len(got) != 1 || !bytes.Equal(got[0].Data, data) {
		t.Fatalf("binary data did not round-trip")
	}
}

func testRacingWriters(t *testing.T, r eventstore.Recorder) {
	id := uuid.New()
	mustAppend(t, r, stream(id, 0, 1))
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[w] = r.Append(ctx(t), []eventstore.Record{rec(id, 1, fmt.Sprintf("Writer%d", w), "{}"), rec(id, 2, "Second", "{}")})
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, eventstore.ErrConcurrency):
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won version 1, want exactly 1", wins)
	}
	if got := positions(read(t, r, id, eventstore.StreamQuery{})); !equalU(got, []uint64{0, 1, 2}) {
		t.Fatalf("positions = %v, want [0 1 2]", got)
	}
}

// testConcurrentTail is the never-skip proof: writers append to many
// streams while readers follow the notification log by id. Every record
// must be seen exactly once by every reader, in per-stream order.
func testConcurrentTail(t *testing.T, r eventstore.Recorder) {
	const (
		writers   = 6
		perWriter = 60
		readers   = 3
	)
	c := ctx(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
			next := map[uuid.UUID]uint64{}
			for i := range perWriter {
				id := ids[(i+w)%len(ids)]
				n := uint64(1 + i%2)
				if err := r.Append(c, stream(id, next[id], n)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				next[id] += n
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	type result struct {
		seen map[string]int
		err  error
	}
	results := make(chan result, readers)
	for range readers {
		go func() {
			seen := map[string]int{}
			last := map[uuid.UUID]int64{}
			next := uint64(1)
			finished := false
			for {
				ns, err := r.ReadNotifications(c, eventstore.NotificationQuery{Start: next, Limit: 7})
				if err != nil {
					results <- result{err: err}
					return
				}
				for _, n := range ns {
					if n.ID != next {
						results <- result{err: fmt.Errorf("read id %d, expected %d: the log skipped", n.ID, next)}
						return
					}
					next++
					key := fmt.Sprintf("%s/%d", n.StreamID, n.Position)
					seen[key]++
					prev, ok := last[n.StreamID]
					if !ok {
						prev = -1
					}
					if int64(n.Position) != prev+1 {
						results <- result{err: fmt.Errorf("stream %s: position %d after %d", n.StreamID, n.Position, prev)}
						return
					}
					last[n.StreamID] = int64(n.Position)
				}
				if len(ns) == 0 {
					if finished {
						results <- result{seen: seen}
						return
					}
					select {
					case <-done:
						finished = true // one more pass after the last commit
					case <-time.After(time.Millisecond):
					}
				}
			}
		}()
	}
	var total int
	for range readers {
		res := <-results
		if res.err != nil {
			t.Fatal(res.err)
		}
		for k, n := range res.seen {
			if n != 1 {
				t.Errorf("%s seen %d times", k, n)
			}
		}
		if total == 0 {
			total = len(res.seen)
		} else if len(res.seen) != total {
			t.Errorf("readers saw %d and %d records", total, len(res.seen))
		}
	}
	var stored int
	max, err := r.MaxNotificationID(c)
	if err != nil {
		t.Fatal(err)
	}
	stored = int(max)
	if total != stored {
		t.Fatalf("readers saw %d records, store holds %d", total, stored)
	}
}

// testConcurrentBatchesContiguous: see [ConcurrentBatchesContiguous].
func testConcurrentBatchesContiguous(t *testing.T, r eventstore.Recorder) {
	ConcurrentBatchesContiguous(t, r, 5, 20, 200)
}

// ConcurrentBatchesContiguous appends two batches of the given sizes, for
// different streams and at the same moment, rounds times, and fails t
// unless each batch took one contiguous run of notification ids: all ids
// of one above or below all ids of the other. Consumers of the log rely
// on a transaction being one run. r must hold no other appends meanwhile.
func ConcurrentBatchesContiguous(t *testing.T, r eventstore.Recorder, rounds, sizeA, sizeB int) {
	t.Helper()
	next := uint64(1)
	if top, err := r.MaxNotificationID(ctx(t)); err != nil {
		t.Fatal(err)
	} else {
		next = top + 1
	}
	for round := range rounds {
		var batches [2][]eventstore.Record
		owner := map[uuid.UUID]int{}
		for b, size := range []int{sizeA, sizeB} {
			ids := make([]uuid.UUID, max(1, size/20))
			for i := range ids {
				ids[i] = uuid.New()
			}
			for i := range size {
				id := ids[i%len(ids)]
				owner[id] = b
				batches[b] = append(batches[b], rec(id, uint64(i/len(ids)), "T", "{}"))
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, b := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := r.Append(ctx(t), b); err != nil {
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		want := sizeA + sizeB
		ns, err := r.ReadNotifications(ctx(t), eventstore.NotificationQuery{Start: next, Limit: want + 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(ns) != want {
			t.Fatalf("round %d: %d notifications, want %d", round, len(ns), want)
		}
		changes := 0
		for i := 1; i < len(ns); i++ {
			if owner[ns[i].StreamID] != owner[ns[i-1].StreamID] {
				changes++
			}
		}
		if changes != 1 {
			t.Fatalf("round %d: two concurrent batches interleave in the log (%d alternations)", round, changes)
		}
		next = ns[len(ns)-1].ID + 1
	}
}

func testSnapshots(t *testing.T, r eventstore.Recorder) {
	s, ok := r.(eventstore.SnapshotRecorder)
	if !ok {
		t.Skip("recorder does not implement SnapshotRecorder")
	}
	id := uuid.New()
	if _, ok, err := s.LatestSnapshot(ctx(t), id, nil); err != nil || ok {
		t.Fatalf("LatestSnapshot of none = %v, %v", ok, err)
	}
	for _, p := range []uint64{4, 9, 14} {
		if err := s.SaveSnapshot(ctx(t), rec(id, p, "World", fmt.Sprintf(`{"at":%d}`, p))); err != nil {
			t.Fatalf("SaveSnapshot: %v", err)
		}
	}
	if err := s.SaveSnapshot(ctx(t), rec(id, 9, "World", `{"at":"replaced"}`)); err != nil {
		t.Fatalf("SaveSnapshot again: %v", err)
	}
	cases := []struct {
		upTo *uint64
		want uint64
		ok   bool
	}{{nil, 14, true}, {u(20), 14, true}, {u(14), 14, true}, {u(13), 9, true}, {u(9), 9, true}, {u(3), 0, false}}
	for _, c := range cases {
		snap, ok, err := s.LatestSnapshot(ctx(t), id, c.upTo)
		if err != nil || ok != c.ok || (ok && snap.Position != c.want) {
			t.Errorf("LatestSnapshot(upTo=%v) = %d, %v, %v; want %d, %v", c.upTo, snap.Position, ok, err, c.want, c.ok)
		}
	}
	snap, _, _ := s.LatestSnapshot(ctx(t), id, u(9))
	if string(snap.Data) != `{"at":"replaced"}` || snap.Topic != "World" || snap.StreamID != id {
		t.Errorf("snapshot 9 = %+v", snap)
	}
	if _, ok, _ := s.LatestSnapshot(ctx(t), uuid.New(), nil); ok {
		t.Errorf("snapshot of another stream returned")
	}
}
