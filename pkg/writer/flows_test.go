package writer_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/esflow/esflow/pkg/outbox"
)

// The main flows, run on SQLite here and on PostgreSQL in postgres_test.go.

func TestWorldFlow(t *testing.T)   { worldFlow(t, newEnv(t, "")) }
func TestExampleFlow(t *testing.T) { exampleFlow(t, newEnv(t, "")) }
func TestStreamFlow(t *testing.T)  { streamFlow(t, newEnv(t, "")) }
func TestConcurrency(t *testing.T) { concurrency(t, newEnv(t, "")) }

func worldFlow(t *testing.T, e *env) {
	created := e.must(http.StatusCreated, "POST", "/v1/worlds", map[string]any{"ruler": "gods"})
	id := created.str("id")
	if created.num("version") != 1 || created.header.Get("Location") != "/v1/worlds/"+id || created.header.Get("ETag") != `"1"` {
		t.Fatalf("create: %s %v", created.raw, created.header)
	}
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "dinosaurs"})
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "trucks", "expected_version": 2})
	r := e.must(http.StatusOK, "PUT", "/v1/worlds/"+id+"/ruler", map[string]any{"ruler": "humans"}, "If-Match", `"3"`)
	if r.num("version") != 4 {
		t.Fatalf("set ruler: %s", r.raw)
	}

	got := e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil)
	var w struct {
		ID      string   `json:"id"`
		Version uint64   `json:"version"`
		Ruler   string   `json:"ruler"`
		History []string `json:"history"`
	}
	if err := json.Unmarshal(got.raw, &w); err != nil {
		t.Fatal(err)
	}
	if w.ID != id || w.Version != 4 || w.Ruler != "humans" || !slices.Equal(w.History, []string{"dinosaurs", "trucks"}) {
		t.Fatalf("world: %s", got.raw)
	}
	old := e.must(http.StatusOK, "GET", "/v1/worlds/"+id+"?version=2", nil)
	if old.num("version") != 2 || old.str("ruler") != "gods" || fmt.Sprint(old.body["history"]) != "[dinosaurs]" {
		t.Fatalf("world at 2: %s", old.raw)
	}
	first := e.must(http.StatusOK, "GET", "/v1/worlds/"+id+"?version=1", nil)
	if fmt.Sprint(first.body["history"]) != "[]" {
		t.Fatalf("history at 1 should be an empty list: %s", first.raw)
	}
	e.must(http.StatusNotFound, "GET", "/v1/worlds/"+id+"?version=9", nil)

	// Stale expected versions are refused with the current version.
	c := e.must(http.StatusConflict, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "x", "expected_version": 1})
	if c.num("current_version") != 4 {
		t.Fatalf("conflict body: %s", c.raw)
	}
	e.must(http.StatusConflict, "DELETE", "/v1/worlds/"+id, nil, "If-Match", "2")

	// Every event went through the outbox, to esflow.World, keyed by id.
	msgs := e.messages()
	if len(msgs) != 4 {
		t.Fatalf("outbox holds %d messages, want 4", len(msgs))
	}
	for i, m := range msgs {
		env, err := outbox.DecodeEnvelope(m.Value)
		if err != nil || m.Topic != "esflow.World" || string(m.Key) != id || env.AggregateVersion != uint64(i) {
			t.Fatalf("message %d: topic %s key %s envelope %+v %v", i, m.Topic, m.Key, env, err)
		}
	}

	d := e.must(http.StatusOK, "DELETE", "/v1/worlds/"+id, nil)
	if d.num("version") != 5 {
		t.Fatalf("discard: %s", d.raw)
	}
	before := e.state()
	e.must(http.StatusGone, "GET", "/v1/worlds/"+id, nil)
	e.must(http.StatusGone, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "x"})
	e.must(http.StatusGone, "DELETE", "/v1/worlds/"+id, nil)
	if after := e.state(); after != before {
		t.Fatalf("commands on a discarded world wrote: %+v -> %+v", before, after)
	}
	// The state before the discard is still readable.
	e.must(http.StatusOK, "GET", "/v1/worlds/"+id+"?version=4", nil)

	// A client-chosen id, and creating it twice.
	own := "7d444840-9dc0-41d8-bd96-1d0c5b6f3b10"
	e.must(http.StatusCreated, "POST", "/v1/worlds", map[string]any{"ruler": "cats", "id": own})
	dup := e.must(http.StatusConflict, "POST", "/v1/worlds", map[string]any{"ruler": "dogs", "id": own})
	if dup.num("current_version") != 1 {
		t.Fatalf("duplicate create: %s", dup.raw)
	}
}

func exampleFlow(t *testing.T, e *env) {
	id := e.must(http.StatusCreated, "POST", "/v1/examples", map[string]any{"foo": "bar"}).str("id")
	e.must(http.StatusOK, "PUT", "/v1/examples/"+id+"/foo", map[string]any{"foo": "baz", "expected_version": 1})
	x := e.must(http.StatusOK, "GET", "/v1/examples/"+id, nil)
	if x.str("foo") != "baz" || x.num("version") != 2 || x.str("id") != id {
		t.Fatalf("example: %s", x.raw)
	}
	if old := e.must(http.StatusOK, "GET", "/v1/examples/"+id+"?version=1", nil); old.str("foo") != "bar" {
		t.Fatalf("example at 1: %s", old.raw)
	}
	e.must(http.StatusConflict, "PUT", "/v1/examples/"+id+"/foo", map[string]any{"foo": "x"}, "If-Match", "1")
	e.must(http.StatusOK, "DELETE", "/v1/examples/"+id, map[string]any{"expected_version": 2})
	e.must(http.StatusGone, "GET", "/v1/examples/"+id, nil)
	e.must(http.StatusGone, "PUT", "/v1/examples/"+id+"/foo", map[string]any{"foo": "x"})

	// An Example is not a World, and the other way round.
	wid := e.createWorld("gods")
	e.must(http.StatusNotFound, "GET", "/v1/worlds/"+id, nil)
	e.must(http.StatusNotFound, "GET", "/v1/examples/"+wid, nil)
	e.must(http.StatusNotFound, "PUT", "/v1/examples/"+wid+"/foo", map[string]any{"foo": "x"})
	msgs := e.messages()
	if len(msgs) != 4 || msgs[0].Topic != "esflow.Example" || msgs[3].Topic != "esflow.World" {
		t.Fatalf("outbox: %d messages", len(msgs))
	}
}

func streamFlow(t *testing.T, e *env) {
	id := "0b6f8a52-5b3c-4a57-9d36-0c7c4f3b9e11"
	path := "/v1/streams/" + id + "/events"
	e.must(http.StatusNotFound, "GET", path, nil)
	e.must(http.StatusNotFound, "GET", "/v1/streams/"+id+"/head", nil)

	r := e.must(http.StatusCreated, "POST", path, map[string]any{
		"expected_version": 0, "aggregate_type": "Order",
		"events": []any{
			map[string]any{"type": "OrderPlaced", "data": map[string]any{"total": 3, "items": []string{"a", "b"}},
				"metadata": map[string]any{"correlation_id": "c-1", "values": map[string]string{"k": "v"}}},
			map[string]any{"type": "OrderPaid", "data": map[string]any{}},
		},
	})
	if r.num("version") != 2 || r.str("stream_id") != id || len(r.body["events"].([]any)) != 2 {
		t.Fatalf("append: %s", r.raw)
	}
	// A stale append is refused, with the stream's version.
	c := e.must(http.StatusConflict, "POST", path, map[string]any{"expected_version": 1,
		"events": []any{map[string]any{"type": "OrderShipped", "data": map[string]any{}}}})
	if c.num("current_version") != 2 {
		t.Fatalf("conflict: %s", c.raw)
	}
	// The stream keeps its aggregate type when the request leaves it out.
	e.must(http.StatusCreated, "POST", path, `{"expected_version":2,"events":[{"type":"OrderShipped","data":{"by":"<post>"}}]}`)
	e.must(http.StatusUnprocessableEntity, "POST", path, map[string]any{"expected_version": 3, "aggregate_type": "Invoice",
		"events": []any{map[string]any{"type": "X", "data": map[string]any{}}}})

	type event struct {
		ID            string          `json:"id"`
		Type          string          `json:"type"`
		AggregateType string          `json:"aggregate_type"`
		Hash          string          `json:"hash"`
		PreviousHash  string          `json:"previous_hash"`
		Version       uint64          `json:"version"`
		Data          json.RawMessage `json:"data"`
		Metadata      *struct {
			CorrelationID string            `json:"correlation_id"`
			Values        map[string]string `json:"values"`
		}
	}
	type page struct {
		Events   []event `json:"events"`
		NextFrom uint64  `json:"next_from"`
	}
	read := func(q string) page {
		var p page
		if err := json.Unmarshal(e.must(http.StatusOK, "GET", path+q, nil).raw, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	all := read("")
	if len(all.Events) != 3 || all.NextFrom != 3 {
		t.Fatalf("read: %+v", all)
	}
	ev := all.Events[0]
	if ev.Type != "OrderPlaced" || string(ev.Data) != `{"items":["a","b"],"total":3}` || ev.Metadata == nil ||
		ev.Metadata.CorrelationID != "c-1" || ev.Metadata.Values["k"] != "v" || ev.PreviousHash != "" || ev.AggregateType != "Order" {
		t.Fatalf("first event: %+v %s", ev, ev.Data)
	}
	for i := 1; i < 3; i++ {
		if all.Events[i].PreviousHash != all.Events[i-1].Hash || all.Events[i].Version != uint64(i) {
			t.Fatalf("chain broken at %d: %+v", i, all.Events)
		}
	}
	var shipped map[string]string
	if err := json.Unmarshal(all.Events[2].Data, &shipped); err != nil || shipped["by"] != "<post>" {
		t.Fatalf("payload round trip: %s %v", all.Events[2].Data, err)
	}
	// Paging.
	p1 := read("?from=0&limit=2")
	p2 := read(fmt.Sprintf("?from=%d&limit=2", p1.NextFrom))
	p3 := read(fmt.Sprintf("?from=%d&limit=2", p2.NextFrom))
	if len(p1.Events) != 2 || len(p2.Events) != 1 || p2.Events[0].ID != all.Events[2].ID || len(p3.Events) != 0 || p3.NextFrom != 3 {
		t.Fatalf("paging: %+v / %+v / %+v", p1, p2, p3)
	}
	if mid := read("?from=1&limit=1"); len(mid.Events) != 1 || mid.Events[0].Version != 1 || mid.NextFrom != 2 {
		t.Fatalf("from=1: %+v", mid)
	}
	h := e.must(http.StatusOK, "GET", "/v1/streams/"+id+"/head", nil)
	if h.num("version") != 3 || h.str("hash") != all.Events[2].Hash || h.str("aggregate_type") != "Order" {
		t.Fatalf("head: %s", h.raw)
	}

	// The events went through the outbox as envelopes with the raw payload.
	msgs := e.messages()
	if len(msgs) != 3 {
		t.Fatalf("outbox holds %d messages", len(msgs))
	}
	env, err := outbox.DecodeEnvelope(msgs[0].Value)
	if err != nil || msgs[0].Topic != "esflow.Order" || env.EventType != "OrderPlaced" || string(env.Payload) != `{"items":["a","b"],"total":3}` ||
		env.Hash != all.Events[0].Hash {
		t.Fatalf("message: %s %+v %v", msgs[0].Topic, env, err)
	}

	// A new stream without aggregate_type is a "Stream"; domain streams are read-only here.
	other := "5e1c0e4c-7a43-4bd4-9f5b-2f1d3a3c7d22"
	e.must(http.StatusCreated, "POST", "/v1/streams/"+other+"/events", map[string]any{"expected_version": 0,
		"events": []any{map[string]any{"type": "Noted", "data": map[string]any{"n": 1}}}})
	if h := e.must(http.StatusOK, "GET", "/v1/streams/"+other+"/head", nil); h.str("aggregate_type") != "Stream" {
		t.Fatalf("default aggregate type: %s", h.raw)
	}
	wid := e.createWorld("gods")
	world := read2(t, e, "/v1/streams/"+wid+"/events")
	if len(world) != 1 || world[0]["type"] != "Created" || world[0]["aggregate_type"] != "World" {
		t.Fatalf("world stream: %v", world)
	}
	before := e.state()
	e.must(http.StatusUnprocessableEntity, "POST", "/v1/streams/"+wid+"/events", map[string]any{"expected_version": 1,
		"events": []any{map[string]any{"type": "Noted", "data": map[string]any{}}}})
	e.must(http.StatusUnprocessableEntity, "POST", "/v1/streams/"+other+"/events", map[string]any{"expected_version": 1,
		"events": []any{map[string]any{"type": "SomethingHappened", "data": map[string]any{"what": "x"}}}})
	e.must(http.StatusUnprocessableEntity, "POST", "/v1/streams/"+other+"/events", map[string]any{"expected_version": 1,
		"aggregate_type": "World", "events": []any{map[string]any{"type": "Noted", "data": map[string]any{}}}})
	if after := e.state(); after != before {
		t.Fatalf("refused appends wrote: %+v -> %+v", before, after)
	}
	// A generic stream is not a World.
	e.must(http.StatusNotFound, "GET", "/v1/worlds/"+other, nil)
}

func read2(t *testing.T, e *env, path string) []map[string]any {
	t.Helper()
	var p struct {
		Events []map[string]any `json:"events"`
	}
	if err := json.Unmarshal(e.must(http.StatusOK, "GET", path, nil).raw, &p); err != nil {
		t.Fatal(err)
	}
	return p.Events
}

// concurrency races commands on one aggregate: at each version exactly one
// wins, the others get 409, and nothing is lost or duplicated.
func concurrency(t *testing.T, e *env) {
	const writers = 8
	id := e.createWorld("gods")
	statuses := make(chan int, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.do("POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": fmt.Sprint("w", i), "expected_version": 1})
			statuses <- r.status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusOK] != 1 || count[http.StatusConflict] != writers-1 {
		t.Fatalf("same expected version: %v, want one 200 and %d 409", count, writers-1)
	}

	// Without an expected version each command still either wins its
	// version or gets 409: the world's version counts the winners exactly.
	stream := "1f0e4b7e-6f8a-4c1e-9a3b-0d5c6e7f8a9b"
	e.must(http.StatusCreated, "POST", "/v1/streams/"+stream+"/events", map[string]any{"expected_version": 0,
		"events": []any{map[string]any{"type": "Started", "data": map[string]any{}}}})
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				r := e.do("POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": fmt.Sprint(i, "-", j)})
				g := e.do("POST", "/v1/streams/"+stream+"/events", map[string]any{"expected_version": 1 + j,
					"events": []any{map[string]any{"type": "Step", "data": map[string]any{"w": i}}}})
				mu.Lock()
				for _, s := range []int{r.status, g.status} {
					switch s {
					case http.StatusOK, http.StatusCreated:
						wins++
					case http.StatusConflict:
						conflicts++
					default:
						t.Errorf("status %d", s)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	w := e.must(http.StatusOK, "GET", "/v1/worlds/"+id, nil)
	h := e.must(http.StatusOK, "GET", "/v1/streams/"+stream+"/head", nil)
	worldWins := int(w.num("version")) - 2 // created + the first race's winner
	streamWins := int(h.num("version")) - 1
	if worldWins+streamWins != wins || len(w.body["history"].([]any)) != worldWins+1 || streamWins != 5 {
		t.Fatalf("wins %d (conflicts %d), world version %d, stream version %d", wins, conflicts, w.num("version"), h.num("version"))
	}
	if got, want := e.state().backlog, int64(2+worldWins+1+streamWins); got != want {
		t.Fatalf("outbox backlog %d, want %d (one message per stored event)", got, want)
	}
	// Each generic step version was won exactly once: the chain verifies.
	if evs := read2(t, e, "/v1/streams/"+stream+"/events"); len(evs) != 6 {
		t.Fatalf("stream has %d events", len(evs))
	}
}
