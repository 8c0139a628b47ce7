package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

type Counter struct {
	aggregate.Root
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type Incremented struct {
	By int `json:"by"`
}

func (c *Counter) Apply(e aggregate.Event) {
	switch p := e.Payload.(type) {
	case *aggregate.Created:
		p.Decode("name", &c.Name)
	case *aggregate.AttributeChanged:
		p.Decode("name", &c.Name)
	case *Incremented:
		c.Count += p.By
	}
}

func newCounter(t *testing.T) *Counter {
	t.Helper()
	c := new(Counter)
	if err := aggregate.Create(c, &aggregate.Created{Attributes: map[string]any{"name": "a"}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTriggerAppliesAndCollects(t *testing.T) {
	t.Parallel()
	c := newCounter(t)
	if err := aggregate.Trigger(c, Incremented{By: 2}); err != nil { // a value payload becomes a pointer
		t.Fatal(err)
	}
	if err := aggregate.SetAttribute(c, "name", "b"); err != nil {
		t.Fatal(err)
	}
	if c.Count != 2 || c.Name != "b" || c.Version() != 3 {
		t.Fatalf("state = %+v version %d", c, c.Version())
	}
	pending := c.PendingEvents()
	if len(pending) != 3 {
		t.Fatalf("pending = %d, want 3", len(pending))
	}
	wantTypes := []string{"Created", "Incremented", "AttributeChanged"}
	for i, e := range pending {
		if e.Version != uint64(i) || e.Type != wantTypes[i] || e.AggregateID != c.ID() || e.AggregateType != "Counter" {
			t.Errorf("event %d = %+v", i, e)
		}
		if e.Hash == "" || (i > 0 && e.PreviousHash != pending[i-1].Hash) || (i == 0 && e.PreviousHash != "") {
			t.Errorf("event %d breaks the chain", i)
		}
	}
	if _, ok := pending[1].Payload.(*Incremented); !ok {
		t.Errorf("payload is %T, want *Incremented", pending[1].Payload)
	}
	if c.Head() != pending[2].Hash {
		t.Errorf("head is not the last event's hash")
	}
	c.ClearPendingEvents()
	if len(c.PendingEvents()) != 0 {
		t.Errorf("pending not cleared")
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	if err := aggregate.Trigger(new(Counter), &Incremented{}); !errors.Is(err, aggregate.ErrNotCreated) {
		t.Errorf("trigger before create: %v", err)
	}
	c := newCounter(t)
	if err := aggregate.Create(c, &aggregate.Created{}); err == nil {
		t.Errorf("second Create accepted")
	}
	if err := aggregate.Discard(c); err != nil {
		t.Fatal(err)
	}
	if !c.Discarded() {
		t.Fatal("not discarded")
	}
	if err := aggregate.Trigger(c, &Incremented{By: 1}); !errors.Is(err, aggregate.ErrDiscarded) {
		t.Errorf("trigger after discard: %v", err)
	}
	if err := aggregate.Trigger(newCounter(t), nil); err == nil {
		t.Errorf("nil payload accepted")
	}
	if err := aggregate.Trigger(newCounter(t), &struct{ C chan int }{}); err == nil {
		t.Errorf("unencodable payload accepted")
	}
}

func TestReplayRebuildsSameState(t *testing.T) {
	t.Parallel()
	c := newCounter(t)
	for i := 1; i <= 4; i++ {
		_ = aggregate.Trigger(c, &Incremented{By: i})
	}
	copy := new(Counter)
	if err := aggregate.Replay(copy, c.PendingEvents()...); err != nil {
		t.Fatal(err)
	}
	if copy.Count != 10 || copy.Name != "a" || copy.Version() != 5 || copy.Head() != c.Head() || copy.ID() != c.ID() {
		t.Fatalf("replayed %+v v%d, want count 10 v5 same head", copy, copy.Version())
	}
	if len(copy.PendingEvents()) != 0 {
		t.Errorf("replay left pending events")
	}
}

func TestReplayDetectsTampering(t *testing.T) {
	t.Parallel()
	c := newCounter(t)
	_ = aggregate.Trigger(c, &Incremented{By: 1})
	_ = aggregate.Trigger(c, &Incremented{By: 2})
	events := c.PendingEvents()
	cases := map[string]func([]aggregate.Event) []aggregate.Event{
		"missing event":   func(es []aggregate.Event) []aggregate.Event { return append(es[:1:1], es[2:]...) },
		"reordered":       func(es []aggregate.Event) []aggregate.Event { return []aggregate.Event{es[0], es[2], es[1]} },
		"broken link":     func(es []aggregate.Event) []aggregate.Event { es[2].PreviousHash = "x"; return es },
		"other aggregate": func(es []aggregate.Event) []aggregate.Event { es[1].AggregateID = uuid.New(); return es },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			es := mutate(append([]aggregate.Event(nil), events...))
			if err := aggregate.Replay(new(Counter), es...); !errors.Is(err, aggregate.ErrIntegrity) {
				t.Fatalf("err = %v, want ErrIntegrity", err)
			}
		})
	}
	if _, err := aggregate.VerifyChain("", events); err != nil {
		t.Fatalf("VerifyChain of intact events: %v", err)
	}
	changed := append([]aggregate.Event(nil), events...)
	changed[1].Payload = &Incremented{By: 99}
	b, _ := aggregate.MarshalPayload(changed[1].Payload)
	if aggregate.HashEvent(changed[1], b) == events[1].Hash {
		t.Fatalf("hash does not cover the payload")
	}
}

func TestRegistryDecodeAndUpcast(t *testing.T) {
	t.Parallel()
	type PriceSet struct {
		Amount   int    `json:"amount"`
		Currency string `json:"currency"`
		Note     string `json:"note"`
	}
	reg := aggregate.NewRegistry()
	aggregate.Register[PriceSet](reg, aggregate.Upcasts(
		func(d map[string]any) error { d["currency"] = "EUR"; return nil },                         // v1 -> v2
		func(d map[string]any) error { d["note"] = "from v" + d["currency"].(string); return nil }, // v2 -> v3
	))
	if v := reg.CurrentVersion("PriceSet"); v != 3 {
		t.Fatalf("current version = %d, want 3", v)
	}
	for _, tc := range []struct {
		version int
		data    string
		want    PriceSet
	}{
		{1, `{"amount":5}`, PriceSet{5, "EUR", "from vEUR"}},
		{2, `{"amount":5,"currency":"USD"}`, PriceSet{5, "USD", "from vUSD"}},
		{3, `{"amount":5,"currency":"GBP","note":"n"}`, PriceSet{5, "GBP", "n"}},
	} {
		got, err := reg.Decode("PriceSet", tc.version, []byte(tc.data))
		if err != nil {
			t.Fatalf("v%d: %v", tc.version, err)
		}
		if !reflect.DeepEqual(got, &tc.want) {
			t.Errorf("v%d decoded %+v, want %+v", tc.version, got, tc.want)
		}
	}
	if _, err := reg.Decode("PriceSet", 4, []byte(`{}`)); err == nil {
		t.Errorf("future version accepted")
	}
	if _, err := reg.Decode("Nope", 1, []byte(`{}`)); !errors.Is(err, aggregate.ErrUnknownEventType) {
		t.Errorf("unknown type: %v", err)
	}
	if _, err := reg.Decode("PriceSet", 3, []byte(`{"amount":"x"}`)); err == nil {
		t.Errorf("wrong field type accepted")
	}
	if err := reg.Add(reflect.TypeFor[Incremented](), aggregate.Named("PriceSet")); err == nil {
		t.Errorf("duplicate name for another type accepted")
	}
	for _, n := range []string{"AttributeChanged", "Created", "Discarded"} {
		if _, _, ok := reg.Lookup(n); !ok {
			t.Errorf("ready-made %s not registered", n)
		}
	}
}

func TestAttributesSurviveJSON(t *testing.T) {
	t.Parallel()
	type point struct{ X, Y int }
	created := &aggregate.Created{Attributes: map[string]any{"p": point{1, 2}, "n": 3}}
	b, _ := json.Marshal(created)
	var loaded aggregate.Created
	if err := json.Unmarshal(b, &loaded); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*aggregate.Created{created, &loaded} {
		var p point
		var n int
		if !c.Decode("p", &p) || !c.Decode("n", &n) || p != (point{1, 2}) || n != 3 {
			t.Errorf("decoded p=%v n=%v", p, n)
		}
		if c.Decode("missing", &n) {
			t.Errorf("missing attribute decoded")
		}
	}
	ch := &aggregate.AttributeChanged{Name: "x", Value: "v"}
	var s string
	if ch.Decode("y", &s) || !ch.Decode("x", &s) || s != "v" {
		t.Errorf("AttributeChanged.Decode: %q", s)
	}
}

func TestBus(t *testing.T) {
	t.Parallel()
	var bus aggregate.Bus
	var got []string
	unsubA := bus.Subscribe(func(_ context.Context, es ...aggregate.Event) error {
		for _, e := range es {
			got = append(got, "a:"+e.Type)
		}
		return nil
	})
	boom := errors.New("boom")
	bus.Subscribe(func(_ context.Context, es ...aggregate.Event) error { got = append(got, "b"); return boom })
	if err := bus.Publish(context.Background(), aggregate.Event{Type: "X"}); !errors.Is(err, boom) {
		t.Fatalf("Publish error = %v, want boom", err)
	}
	unsubA()
	_ = bus.Publish(context.Background(), aggregate.Event{Type: "Y"})
	if want := []string{"a:X", "b", "b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestTypeName(t *testing.T) {
	t.Parallel()
	if n := aggregate.TypeName(&Incremented{}); n != "Incremented" {
		t.Errorf("TypeName = %q", n)
	}
	if n := aggregate.TypeName(named{}); n != "custom.Name" {
		t.Errorf("TypeName with EventType = %q", n)
	}
	if n := aggregate.TypeName(nil); n != "" {
		t.Errorf("TypeName(nil) = %q", n)
	}
}

type named struct{}

func (named) EventType() string { return "custom.Name" }
