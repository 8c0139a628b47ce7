package writer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/domainapi"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/writer"
)

// TestNotificationsDecodeJSON: ?decode=json adds each event's type and
// JSON payload to its item (data stays), on a plain store; on a store that
// encrypts at rest the items say encrypted and carry no payload, while
// the stream read marks its events encrypted. Anything but json is a 400.
func TestNotificationsDecodeJSON(t *testing.T) {
	e := newEnv(t, "")
	id := e.createWorld("gaia")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "oceans"})
	r := e.must(http.StatusOK, "GET", "/v1/notifications/1,10?decode=json", nil)
	items := r.body["items"].([]any)
	second := items[1].(map[string]any)
	payload, _ := second["payload"].(map[string]any)
	if len(items) != 2 || second["type"] != "SomethingHappened" || second["aggregate_type"] != "World" || payload["what"] != "oceans" ||
		second["encrypted"] != false || second["data"] == "" {
		t.Fatalf("decoded section: %s", r.raw)
	}
	e.must(http.StatusBadRequest, "GET", "/v1/notifications/1,10?decode=xml", nil)

	key, err := eventstore.GenerateCipherKey()
	if err != nil {
		t.Fatal(err)
	}
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: "sqlite::memory:", Registry: aggregate.NewRegistry(), CreateTables: true, Outbox: &outbox.Builder{}, CipherKey: key,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv, err := writer.New(writer.Config{App: app})
	if err != nil {
		t.Fatal(err)
	}
	domainapi.Mount(srv)
	get := func(method, path, body string) map[string]any {
		t.Helper()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		if rec.Code/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	w := get("POST", "/v1/worlds", `{"ruler":"secret"}`)
	sec := get("GET", "/v1/notifications/1,10?decode=json", "")
	it := sec["items"].([]any)[0].(map[string]any)
	if it["encrypted"] != true || it["payload"] != nil || it["type"] != nil {
		t.Fatalf("encrypted item: %v", it)
	}
	read := get("GET", "/v1/streams/"+w["id"].(string)+"/events", "")
	if ev := read["events"].([]any)[0].(map[string]any); ev["encrypted"] != true {
		t.Fatalf("stream read of an encrypted event: %v", ev)
	}
	if v := get("GET", "/v1/console/streams/"+w["id"].(string)+"/verify", ""); v["ok"] != true || v["events"] != 1.0 {
		t.Fatalf("verify: %v", v)
	}
}

// TestVerifyDetectsTampering: the console's verify answers ok for an
// intact stream and ok=false with the reason once a record is forged (a
// copy of an earlier event appended as the next one).
func TestVerifyDetectsTampering(t *testing.T) {
	e := newEnv(t, "")
	id := e.createWorld("gaia")
	e.must(http.StatusOK, "POST", "/v1/worlds/"+id+"/make-it-so", map[string]any{"what": "oceans"})
	if v := e.must(http.StatusOK, "GET", "/v1/console/streams/"+id+"/verify", nil); v.body["ok"] != true || v.num("events") != 2 || v.str("head_hash") == "" {
		t.Fatalf("intact: %s", v.raw)
	}
	sid := uuid.MustParse(id)
	recs, err := e.app.Recorder().ReadStream(context.Background(), sid, eventstore.StreamQuery{})
	if err != nil {
		t.Fatal(err)
	}
	forged := recs[1]
	forged.Position = 2
	if err := e.app.Recorder().Append(context.Background(), []eventstore.Record{forged}); err != nil {
		t.Fatal(err)
	}
	v := e.must(http.StatusOK, "GET", "/v1/console/streams/"+id+"/verify", nil)
	if v.body["ok"] != false || !strings.Contains(v.str("error"), "integrity") {
		t.Fatalf("forged: %s", v.raw)
	}
	e.must(http.StatusNotFound, "GET", "/v1/console/streams/"+uuid.NewString()+"/verify", nil)
}

// TestCreateStream: POST /v1/streams chooses the stream's id.
func TestCreateStream(t *testing.T) {
	e := newEnv(t, "")
	body := `{"expected_version":0,"aggregate_type":"Account","events":[{"type":"Opened","data":{"owner":"ann"}}]}`
	a := e.must(http.StatusCreated, "POST", "/v1/streams", body)
	b := e.must(http.StatusCreated, "POST", "/v1/streams", body)
	id, err := uuid.Parse(a.str("stream_id"))
	if err != nil || a.str("stream_id") == b.str("stream_id") || a.num("version") != 1 ||
		a.header.Get("Location") != "/v1/streams/"+id.String()+"/events?from=0" {
		t.Fatalf("created: %s %v / %s", a.raw, a.header, b.raw)
	}
	r := e.must(http.StatusOK, "GET", "/v1/streams/"+id.String()+"/events", nil)
	if ev := r.body["events"].([]any); len(ev) != 1 || ev[0].(map[string]any)["aggregate_type"] != "Account" {
		t.Fatalf("read: %s", r.raw)
	}
	e.must(http.StatusConflict, "POST", "/v1/streams", `{"expected_version":3,"events":[{"type":"Opened","data":{}}]}`)
}
