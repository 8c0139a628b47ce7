package writer_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/writer"
)

// TestBadInput sends every kind of bad request to every endpoint that
// takes input, and checks the status, that the error says what is wrong,
// and that nothing was written.
func TestBadInput(t *testing.T) {
	e := newEnv(t, "", func(c *writer.Config) { c.MaxBodyBytes = 4096 })
	world := e.createWorld("gods")
	example := e.must(http.StatusCreated, "POST", "/v1/examples", map[string]any{"foo": "bar"}).str("id")
	stream := uuid.NewString()
	e.must(http.StatusCreated, "POST", "/v1/streams/"+stream+"/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`)
	big := `{"ruler":"` + strings.Repeat("x", 5000) + `"}`
	bigEvents := `{"expected_version":1,"events":[{"type":"A","data":{"x":"` + strings.Repeat("x", 5000) + `"}}]}`

	type call struct {
		name, method, path, body string
		headers                  []string
		status                   int
		says                     string // substring of the error message
	}
	w, x, s := "/v1/worlds/"+world, "/v1/examples/"+example, "/v1/streams/"+stream
	calls := []call{
		// Malformed JSON, unknown fields, wrong types, sizes, missing fields.
		{"malformed", "POST", "/v1/worlds", `{"ruler":`, nil, 400, "malformed JSON"},
		{"syntax", "POST", "/v1/worlds", `{"ruler" "x"}`, nil, 400, "malformed JSON at byte"},
		{"not an object", "POST", "/v1/worlds", `["gods"]`, nil, 400, "must be a JSON object"},
		{"empty body", "POST", "/v1/worlds", ``, nil, 400, "empty"},
		{"two values", "POST", "/v1/worlds", `{"ruler":"a"}{"ruler":"b"}`, nil, 400, "more than one JSON value"},
		{"unknown field", "POST", "/v1/worlds", `{"ruler":"a","king":"b"}`, nil, 400, `unknown field "king"`},
		{"wrong type", "POST", "/v1/worlds", `{"ruler":7}`, nil, 400, `field "ruler" must be a string`},
		{"missing field", "POST", "/v1/worlds", `{}`, nil, 400, `"ruler" is required`},
		{"empty field", "POST", "/v1/worlds", `{"ruler":""}`, nil, 400, `must not be empty`},
		{"bad client id", "POST", "/v1/worlds", `{"ruler":"a","id":"nope"}`, nil, 400, "not a UUID"},
		{"too large", "POST", "/v1/worlds", big, nil, 413, "exceeds 4096 bytes"},
		{"content type", "POST", "/v1/worlds", `{"ruler":"a"}`, []string{"Content-Type", "text/plain"}, 415, "not application/json"},
		{"make-it-so missing", "POST", w + "/make-it-so", `{"expected_version":1}`, nil, 400, `"what" is required`},
		{"make-it-so negative version", "POST", w + "/make-it-so", `{"what":"x","expected_version":-1}`, nil, 400, `"expected_version" must be a non-negative integer`},
		{"make-it-so version string", "POST", w + "/make-it-so", `{"what":"x","expected_version":"1"}`, nil, 400, `"expected_version"`},
		{"bad If-Match", "POST", w + "/make-it-so", `{"what":"x"}`, []string{"If-Match", "abc"}, 400, "If-Match"},
		{"If-Match disagrees", "POST", w + "/make-it-so", `{"what":"x","expected_version":1}`, []string{"If-Match", "2"}, 400, "disagree"},
		{"ruler unknown field", "PUT", w + "/ruler", `{"ruler":"x","what":"y"}`, nil, 400, `unknown field "what"`},
		{"delete garbage", "DELETE", w, `{"expected_version":`, nil, 400, "malformed JSON"},
		{"foo wrong type", "PUT", x + "/foo", `{"foo":["x"]}`, nil, 400, `field "foo" must be a string`},
		{"example missing", "POST", "/v1/examples", `{"bar":"x"}`, nil, 400, `unknown field "bar"`},
		{"example empty", "POST", "/v1/examples", `{}`, nil, 400, `"foo" is required`},
		{"delete example garbage", "DELETE", x, `[]`, nil, 400, "must be a JSON object"},

		// Bad ids and unknown aggregates.
		{"bad uuid", "GET", "/v1/worlds/not-a-uuid", ``, nil, 400, "not a UUID"},
		{"nil uuid", "POST", "/v1/worlds/00000000-0000-0000-0000-000000000000/make-it-so", `{"what":"x"}`, nil, 400, "nil UUID"},
		{"braced uuid", "GET", "/v1/examples/{" + example + "}", ``, nil, 400, "not a UUID"},
		{"unknown world", "POST", "/v1/worlds/" + uuid.NewString() + "/make-it-so", `{"what":"x"}`, nil, 404, "no World"},
		{"unknown world get", "GET", "/v1/worlds/" + uuid.NewString(), ``, nil, 404, "no World"},
		{"unknown world ruler", "PUT", "/v1/worlds/" + uuid.NewString() + "/ruler", `{"ruler":"x"}`, nil, 404, "no World"},
		{"unknown world delete", "DELETE", "/v1/worlds/" + uuid.NewString(), ``, nil, 404, "no World"},
		{"unknown example", "DELETE", "/v1/examples/" + uuid.NewString(), ``, nil, 404, "no Example"},
		{"version zero", "GET", w + "?version=0", ``, nil, 400, "at least 1"},
		{"version text", "GET", x + "?version=abc", ``, nil, 400, "not a non-negative integer"},
		{"stream bad uuid", "POST", "/v1/streams/xyz/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`, nil, 400, "not a UUID"},
		{"head bad uuid", "GET", "/v1/streams/xyz/head", ``, nil, 400, "not a UUID"},

		// The generic append.
		{"no expected version", "POST", s + "/events", `{"events":[{"type":"A","data":{}}]}`, nil, 400, "expected_version is required"},
		{"no events", "POST", s + "/events", `{"expected_version":1,"events":[]}`, nil, 400, "at least one event"},
		{"bad type name", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"a b","data":{}}]}`, nil, 400, "must match"},
		{"missing type", "POST", s + "/events", `{"expected_version":1,"events":[{"data":{}}]}`, nil, 400, "events[0].type"},
		{"data not an object", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"A","data":[1]}]}`, nil, 400, "events[0].data must be a JSON object"},
		{"data missing", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"A"}]}`, nil, 400, "events[0].data must be a JSON object"},
		{"event unknown field", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"A","data":{},"x":1}]}`, nil, 400, `unknown field "x"`},
		{"metadata unknown field", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"A","data":{},"metadata":{"user":"x"}}]}`, nil, 400, `unknown field "user"`},
		{"metadata wrong type", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"A","data":{},"metadata":{"values":{"a":1}}}]}`, nil, 400, "must be a string"},
		{"bad aggregate type", "POST", s + "/events", `{"expected_version":1,"aggregate_type":"es flow","events":[{"type":"A","data":{}}]}`, nil, 400, "aggregate_type"},
		{"domain event type", "POST", s + "/events", `{"expected_version":1,"events":[{"type":"Created","data":{}}]}`, nil, 422, "domain model"},
		{"stale stream", "POST", s + "/events", `{"expected_version":0,"events":[{"type":"A","data":{}}]}`, nil, 409, "expected 0"},
		{"ahead of stream", "POST", s + "/events", `{"expected_version":5,"events":[{"type":"A","data":{}}]}`, nil, 409, "expected 5"},
		{"event too large", "POST", s + "/events", bigEvents, nil, 413, "exceeds 4096 bytes"},
		{"read limit", "GET", s + "/events?limit=0", ``, nil, 400, "limit"},
		{"read limit big", "GET", s + "/events?limit=5000", ``, nil, 400, "limit"},
		{"read from text", "GET", s + "/events?from=-1", ``, nil, 400, "from"},
		{"unknown stream", "GET", "/v1/streams/" + uuid.NewString() + "/events", ``, nil, 404, "no events"},

		// The notification log.
		{"bad section", "GET", "/v1/notifications?section=abc", ``, nil, 400, "section"},
		{"reversed section", "GET", "/v1/notifications/10,1", ``, nil, 400, "section"},
		{"huge section", "GET", "/v1/notifications/1,100000", ``, nil, 400, "section"},

		// Routing.
		{"no such endpoint", "GET", "/v1/nothing", ``, nil, 404, "no such endpoint"},
		{"method not allowed", "PATCH", w, `{}`, nil, 405, "not allowed"},
		{"method not allowed 2", "PUT", "/v1/worlds", `{}`, nil, 405, "not allowed"},
	}
	before := e.state()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			r := e.do(c.method, c.path, body, c.headers...)
			if r.status != c.status || !strings.Contains(r.str("error"), c.says) {
				t.Fatalf("%s %s %s: %d %s, want %d with %q", c.method, c.path, c.body, r.status, r.raw, c.status, c.says)
			}
			if r.header.Get("X-Request-ID") == "" || r.str("request_id") != r.header.Get("X-Request-ID") {
				t.Fatalf("request id: header %q body %q", r.header.Get("X-Request-ID"), r.str("request_id"))
			}
			if c.status == 405 && r.header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}
	if after := e.state(); after != before {
		t.Fatalf("bad requests wrote: %+v -> %+v", before, after)
	}
}

// TestInternalErrorHidden corrupts a stored event: the read fails with a
// generic 500 that does not leak the cause.
func TestInternalErrorHidden(t *testing.T) {
	e := newEnv(t, "")
	id := uuid.New()
	// A record that is not an event envelope.
	if err := e.app.Recorder().Append(context.Background(), []eventstore.Record{{StreamID: id, Position: 0, Topic: "Created", Data: []byte(`{"broken`)}}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/worlds/" + id.String(), "/v1/streams/" + id.String() + "/events"} {
		r := e.do("GET", path, nil)
		if r.status != http.StatusInternalServerError || r.str("error") != "internal error" {
			t.Fatalf("GET %s: %d %s", path, r.status, r.raw)
		}
		if strings.Contains(string(r.raw), "integrity") || strings.Contains(string(r.raw), "envelope") {
			t.Fatalf("500 leaks the cause: %s", r.raw)
		}
	}
}

// TestDatabaseClosed answers 503 when the store cannot be used.
func TestDatabaseClosed(t *testing.T) {
	e := newEnv(t, "")
	id := e.createWorld("gods")
	if err := e.app.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][3]string{
		{"GET", "/v1/worlds/" + id, ""},
		{"POST", "/v1/worlds", `{"ruler":"x"}`},
		{"POST", "/v1/worlds/" + id + "/make-it-so", `{"what":"x"}`},
		{"GET", "/v1/notifications", ""},
		{"GET", "/readyz", ""},
	} {
		var body any
		if c[2] != "" {
			body = c[2]
		}
		r := e.do(c[0], c[1], body)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s on a closed database: %d %s", c[0], c[1], r.status, r.raw)
		}
		if c[1] != "/readyz" && (r.header.Get("Retry-After") == "" || !strings.Contains(r.str("error"), "unavailable")) {
			t.Fatalf("%s %s: %v %s", c[0], c[1], r.header, r.raw)
		}
	}
}

// TestEventTooLargeForStore accepts a body the store then refuses: an
// event over the store's 1 MiB limit is a 413 and nothing is written.
func TestEventTooLargeForStore(t *testing.T) {
	e := newEnv(t, "", func(c *writer.Config) { c.MaxBodyBytes = 4 << 20 })
	before := e.state()
	body := `{"expected_version":0,"events":[{"type":"Big","data":{"x":"` + strings.Repeat("x", 3<<19) + `"}}]}`
	r := e.do("POST", "/v1/streams/"+uuid.NewString()+"/events", body)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.str("error"), "larger than the store accepts") {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	big := `{"ruler":"` + strings.Repeat("x", 3<<19) + `"}`
	if r := e.do("POST", "/v1/worlds", big); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("world: %d %s", r.status, r.raw)
	}
	if after := e.state(); after != before {
		t.Fatalf("refused events were written: %+v -> %+v", before, after)
	}
	e.must(http.StatusMethodNotAllowed, "BREW", "/v1/worlds", nil)
	if m := string(e.must(http.StatusOK, "GET", "/metrics", nil).raw); !strings.Contains(m, `method="OTHER"`) || strings.Contains(m, "BREW") {
		t.Fatal("unknown methods should be counted as OTHER")
	}
}
