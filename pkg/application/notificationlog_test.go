package application_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/standalone"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/memory"
)

func appendN(t *testing.T, rec eventstore.Recorder, topic string, n int) uuid.UUID {
	t.Helper()
	id := uuid.New()
	for i := range n {
		if err := rec.Append(context.Background(), []eventstore.Record{{StreamID: id, Position: uint64(i), Topic: topic, Data: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func itemIDs(items []application.Item) []uint64 {
	out := make([]uint64, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

func TestSections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := memory.New()
	log := application.NewLocalLog(rec, 5)
	appendN(t, rec, "A", 12)

	for _, tc := range []struct {
		id, wantID, next string
		ids              []uint64
	}{
		{"1,5", "1,5", "6,10", []uint64{1, 2, 3, 4, 5}},
		{"11,15", "11,15", "", []uint64{11, 12}}, // incomplete: no next yet
		{"current", "11,15", "", []uint64{11, 12}},
		{"3,4", "3,4", "5,6", []uint64{3, 4}},
		{"13,20", "13,20", "", nil},
	} {
		sec, err := log.Section(ctx, tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if sec.ID != tc.wantID || sec.Next != tc.next || len(sec.Items) != len(tc.ids) {
			t.Errorf("%s = id %q next %q items %v", tc.id, sec.ID, sec.Next, itemIDs(sec.Items))
		}
		for i, it := range sec.Items {
			if it.ID != tc.ids[i] {
				t.Errorf("%s item %d id %d, want %d", tc.id, i, it.ID, tc.ids[i])
			}
		}
	}
	for _, bad := range []string{"", "5", "0,3", "5,4", "a,b", "1,5000", "1,2,3"} {
		if _, err := log.Section(ctx, bad); !errors.Is(err, application.ErrBadSection) {
			t.Errorf("Section(%q) = %v, want ErrBadSection", bad, err)
		}
	}
}

func TestReaderFollowsLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := memory.New()
	reader := application.NewReader(application.NewLocalLog(rec, 4), 0, 4)
	appendN(t, rec, "A", 6)
	got, err := reader.Read(ctx)
	if err != nil || len(got) != 6 || reader.Position != 6 {
		t.Fatalf("first read: %v pos %d, %v", itemIDs(got), reader.Position, err)
	}
	if got, _ := reader.Read(ctx); len(got) != 0 {
		t.Fatalf("nothing new, read %v", itemIDs(got))
	}
	appendN(t, rec, "A", 3)
	got, _ = reader.Read(ctx)
	if ids := itemIDs(got); len(ids) != 3 || ids[0] != 7 || ids[2] != 9 {
		t.Fatalf("second read: %v", ids)
	}
}

func TestReaderWithTopicFilterSkipsCompleteSections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := memory.New()
	appendN(t, rec, "Noise", 25)
	appendN(t, rec, "Signal", 2)
	reader := application.NewReader(application.NewLocalLog(rec, 10, "Signal"), 0, 10)
	got, err := reader.Read(ctx)
	if ids := itemIDs(got); err != nil || len(ids) != 2 || ids[0] != 26 || ids[1] != 27 {
		t.Fatalf("filtered read: %v, %v", ids, err)
	}
}

func TestLogOverHTTP(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			app := newApp(t, url)
			srv := httptest.NewServer(http.StripPrefix("/notifications", application.LogHandler(app.Log)))
			defer srv.Close()

			for range 3 {
				w, _ := domain.NewWorld("gods")
				w.MakeItSo("x")
				w.MakeItSo("y")
				if err := app.Save(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
			remote := &application.RemoteLog{BaseURL: srv.URL + "/notifications"}
			reader := application.NewReader(remote, 0, 4)
			items, err := reader.Read(ctx)
			if err != nil || len(items) != 9 {
				t.Fatalf("remote read: %v, %v", itemIDs(items), err)
			}
			for i, it := range items {
				if it.ID != uint64(i+1) {
					t.Fatalf("ids %v", itemIDs(items))
				}
			}
			// Items decode back into events with the application's mapper.
			e, err := app.Store.Mapper().Decode(items[1].Record())
			if err != nil || e.Type != "SomethingHappened" {
				t.Fatalf("decode remote item: %+v, %v", e, err)
			}

			resp, err := http.Get(srv.URL + "/notifications/x,y")
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]string
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || body["error"] == "" {
				t.Fatalf("bad section: %d %v", resp.StatusCode, body)
			}
			if _, err := remote.Section(ctx, "9,1"); !errors.Is(err, application.ErrBadSection) {
				t.Fatalf("remote bad section: %v", err)
			}
			resp, _ = http.Post(srv.URL+"/notifications/1,10", "application/json", nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("POST: %d", resp.StatusCode)
			}
			resp.Body.Close()
		})
	}
}

func TestStandAloneFlowOnEveryBackend(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			app := newApp(t, url)
			bus := new(aggregate.Bus)
			repo := application.NewEntityRepository(app.Store, standalone.Mutate)
			policy := application.NewPersistencePolicy(app.Store, bus)
			defer policy.Close()

			x, err := standalone.CreateNewExample(ctx, bus, "bar")
			if err != nil {
				t.Fatal(err)
			}
			if err := x.SetFoo(ctx, bus, "baz"); err != nil {
				t.Fatal(err)
			}
			got, err := repo.Get(ctx, x.ID)
			if err != nil || got.Foo != "baz" || got.Version != 2 {
				t.Fatalf("Get = %+v, %v", got, err)
			}
			// A stale event published for an old version is refused by the
			// store, and the error reaches the publisher.
			stale := &standalone.Example{ID: x.ID, Version: 1, Foo: "baz"}
			if err := stale.SetFoo(ctx, bus, "stale"); !errors.Is(err, eventstore.ErrConcurrency) {
				t.Fatalf("stale publish: %v", err)
			}
			if err := x.Discard(ctx, bus); err != nil {
				t.Fatal(err)
			}
			if ok, err := repo.Contains(ctx, x.ID); ok || err != nil {
				t.Fatalf("Contains after discard = %v, %v", ok, err)
			}
			if _, err := repo.Get(ctx, x.ID); !errors.Is(err, application.ErrNotFound) {
				t.Fatalf("Get after discard: %v", err)
			}
			policy.Close()
			y, _ := standalone.CreateNewExample(ctx, bus, "unsaved")
			if ok, _ := repo.Contains(ctx, y.ID); ok {
				t.Fatalf("closed policy still stored events")
			}
		})
	}
}
