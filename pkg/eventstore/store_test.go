package eventstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/memory"
)

type Note struct {
	aggregate.Root
	Text  string   `json:"text"`
	Lines []string `json:"lines"`
}

type LineAdded struct {
	Line string `json:"line"`
}

func (n *Note) Apply(e aggregate.Event) {
	switch p := e.Payload.(type) {
	case *aggregate.Created:
		p.Decode("text", &n.Text)
	case *LineAdded:
		n.Lines = append(n.Lines, p.Line)
	}
}

func registry() *aggregate.Registry {
	reg := aggregate.NewRegistry()
	aggregate.Register[LineAdded](reg)
	aggregate.Register[Note](reg)
	return reg
}

func newNote(t *testing.T, lines ...string) *Note {
	t.Helper()
	n := new(Note)
	if err := aggregate.Create(n, &aggregate.Created{Attributes: map[string]any{"text": "secret text"}}); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if err := aggregate.Trigger(n, &LineAdded{Line: l}); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func key(t *testing.T) *eventstore.Cipher {
	t.Helper()
	k, err := eventstore.GenerateCipherKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventstore.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTripOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts eventstore.Options
	}{
		{"plain", eventstore.Options{}},
		{"compressed", eventstore.Options{Compress: true}},
		{"encrypted", eventstore.Options{Cipher: key(t)}},
		{"compressed and encrypted", eventstore.Options{Cipher: key(t), Compress: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rec := memory.New()
			s := eventstore.MustNew(rec, registry(), tc.opts)
			n := newNote(t, "alpha", "beta")
			n.PendingEvents()
			events := n.PendingEvents()
			events[1].Metadata = aggregate.Metadata{CorrelationID: "c-1", CausationID: "k-1"}
			if err := s.Append(ctx, events...); err != nil {
				t.Fatal(err)
			}
			got, err := s.Events(ctx, n.ID(), eventstore.StreamQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 {
				t.Fatalf("got %d events", len(got))
			}
			for i, e := range got {
				w := events[i]
				if e.ID != w.ID || e.Hash != w.Hash || e.PreviousHash != w.PreviousHash || !e.Time.Equal(w.Time) ||
					e.Type != w.Type || e.AggregateType != "Note" || e.Version != uint64(i) || e.Metadata.CorrelationID != w.Metadata.CorrelationID {
					t.Errorf("event %d = %+v, want %+v", i, e, w)
				}
			}
			if p, ok := got[2].Payload.(*LineAdded); !ok || p.Line != "beta" {
				t.Errorf("payload = %#v", got[2].Payload)
			}
			raw, _ := rec.ReadStream(ctx, n.ID(), eventstore.StreamQuery{})
			visible := bytes.Contains(raw[0].Data, []byte("secret text"))
			if hidden := tc.opts.Cipher != nil || tc.opts.Compress; visible == hidden {
				t.Errorf("plaintext visible in stored data = %v", visible)
			}
		})
	}
}

func TestCipherErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, bad := range []string{"", "not base64!!", "c2hvcnQ=" /* "short" */} {
		if _, err := eventstore.NewCipher(bad); !errors.Is(err, eventstore.ErrCipher) {
			t.Errorf("NewCipher(%q) = %v, want ErrCipher", bad, err)
		}
	}
	rec := memory.New()
	writer := eventstore.MustNew(rec, registry(), eventstore.Options{Cipher: key(t)})
	n := newNote(t, "x")
	if err := writer.Append(ctx, n.PendingEvents()...); err != nil {
		t.Fatal(err)
	}
	wrongKey := eventstore.MustNew(rec, registry(), eventstore.Options{Cipher: key(t)})
	if _, err := wrongKey.Events(ctx, n.ID(), eventstore.StreamQuery{}); !errors.Is(err, eventstore.ErrIntegrity) || !errors.Is(err, eventstore.ErrCipher) {
		t.Errorf("wrong key: %v, want ErrIntegrity and ErrCipher", err)
	}
	noKey := eventstore.MustNew(rec, registry(), eventstore.Options{})
	if _, err := noKey.Events(ctx, n.ID(), eventstore.StreamQuery{}); !errors.Is(err, eventstore.ErrCipher) || !strings.Contains(err.Error(), "CIPHER_KEY") {
		t.Errorf("no key: %v", err)
	}
}

// tamper rewrites stored records through a recorder wrapper.
type tamper struct {
	eventstore.Recorder
	fn func([]eventstore.Record)
}

func (t tamper) ReadStream(ctx context.Context, id uuid.UUID, q eventstore.StreamQuery) ([]eventstore.Record, error) {
	recs, err := t.Recorder.ReadStream(ctx, id, q)
	if err == nil {
		t.fn(recs)
	}
	return recs, err
}

func TestTamperingDetected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := map[string]struct {
		opts eventstore.Options
		fn   func([]eventstore.Record)
	}{
		"payload edited": {eventstore.Options{}, func(rs []eventstore.Record) {
			rs[1].Data = bytes.Replace(rs[1].Data, []byte("alpha"), []byte("omega"), 1)
		}},
		"not json": {eventstore.Options{}, func(rs []eventstore.Record) { rs[0].Data = []byte("{garbage") }},
		"ciphertext flipped": {eventstore.Options{Cipher: key(t)}, func(rs []eventstore.Record) {
			rs[1].Data[len(rs[1].Data)-1] ^= 1
		}},
		"ciphertext moved to another position": {eventstore.Options{Cipher: key(t)}, func(rs []eventstore.Record) {
			rs[1].Data, rs[2].Data = rs[2].Data, rs[1].Data
		}},
		"compressed data cut short": {eventstore.Options{Compress: true}, func(rs []eventstore.Record) {
			rs[1].Data = rs[1].Data[:len(rs[1].Data)-4]
		}},
		"event removed from the middle": {eventstore.Options{}, func(rs []eventstore.Record) {
			copy(rs[1:], rs[2:])
			rs[len(rs)-1] = rs[len(rs)-2]
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := memory.New()
			n := newNote(t, "alpha", "beta", "gamma")
			if err := eventstore.MustNew(rec, registry(), tc.opts).Append(ctx, n.PendingEvents()...); err != nil {
				t.Fatal(err)
			}
			s := eventstore.MustNew(tamper{rec, tc.fn}, registry(), tc.opts)
			if _, err := s.Events(ctx, n.ID(), eventstore.StreamQuery{}); !errors.Is(err, eventstore.ErrIntegrity) {
				t.Fatalf("err = %v, want ErrIntegrity", err)
			}
		})
	}
}

func TestBadEventsWriteNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type Unregistered struct{ X int }
	rec := memory.New()
	s := eventstore.MustNew(rec, registry(), eventstore.Options{MaxDataSize: 512})

	n := newNote(t)
	_ = aggregate.Trigger(n, &Unregistered{X: 1})
	if err := s.Append(ctx, n.PendingEvents()...); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Errorf("unregistered type: %v", err)
	}

	big := newNote(t, strings.Repeat("x", 600))
	if err := s.Append(ctx, big.PendingEvents()...); !errors.Is(err, eventstore.ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}

	changed := newNote(t, "a")
	events := changed.PendingEvents()
	events[1].Payload.(*LineAdded).Line = "changed after trigger"
	if err := s.Append(ctx, events...); !errors.Is(err, eventstore.ErrIntegrity) {
		t.Errorf("payload changed after trigger: %v", err)
	}
	if max, _ := rec.MaxNotificationID(ctx); max != 0 {
		t.Fatalf("bad events wrote %d records", max)
	}
}

func TestUnknownTypeOnRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := memory.New()
	n := newNote(t, "a")
	if err := eventstore.MustNew(rec, registry(), eventstore.Options{}).Append(ctx, n.PendingEvents()...); err != nil {
		t.Fatal(err)
	}
	reader := eventstore.MustNew(rec, aggregate.NewRegistry(), eventstore.Options{}) // LineAdded unknown
	if _, err := reader.Events(ctx, n.ID(), eventstore.StreamQuery{}); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Fatalf("err = %v, want ErrUnknownEventType", err)
	}
}

func TestSnapshotUpcast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rec := memory.New()
	old := eventstore.MustNew(rec, registry(), eventstore.Options{Cipher: nil})
	n := newNote(t, "a", "b")
	if err := old.Append(ctx, n.PendingEvents()...); err != nil {
		t.Fatal(err)
	}
	n.ClearPendingEvents()
	if err := old.SaveSnapshot(ctx, n); err != nil {
		t.Fatal(err)
	}
	// A later release renames Note.Text's meaning: v1 -> v2 upper-cases it.
	reg := aggregate.NewRegistry()
	aggregate.Register[LineAdded](reg)
	aggregate.Register[Note](reg, aggregate.Upcasts(func(d map[string]any) error {
		d["text"] = strings.ToUpper(d["text"].(string))
		return nil
	}))
	s := eventstore.MustNew(rec, reg, eventstore.Options{})
	got := new(Note)
	ok, err := s.LoadSnapshot(ctx, n.ID(), nil, got)
	if err != nil || !ok {
		t.Fatalf("LoadSnapshot = %v, %v", ok, err)
	}
	if got.Text != "SECRET TEXT" || got.Version() != 3 || got.Head() != n.Head() || got.ID() != n.ID() || len(got.Lines) != 2 {
		t.Fatalf("snapshot restored %+v v%d", got, got.Version())
	}
	before := uint64(2)
	if ok, _ := s.LoadSnapshot(ctx, n.ID(), &before, new(Note)); ok {
		t.Fatalf("snapshot at version 3 returned for upTo 2")
	}
}

// TestCompressedConcurrently: records compressed and decompressed by many
// goroutines at once (the deflate state is reused between records) come
// back as they were written.
func TestCompressedConcurrently(t *testing.T) {
	t.Parallel()
	s := eventstore.MustNew(nil, registry(), eventstore.Options{Compress: true, Cipher: key(t)})
	notes := make([][]*Note, 8)
	for g := range notes {
		for i := range 50 {
			notes[g] = append(notes[g], newNote(t, strings.Repeat(fmt.Sprintf("goroutine %d note %d ", g, i), 1+i%7)))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(notes))
	for g := range notes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, n := range notes[g] {
				want := n.PendingEvents()
				recs, err := s.Encode(want...)
				if err == nil {
					var got []aggregate.Event
					if got, err = s.Decode(recs); err == nil && len(got) != len(want) {
						err = fmt.Errorf("decoded %d events, want %d", len(got), len(want))
					}
					for j := range got {
						if err == nil && !reflect.DeepEqual(got[j].Payload, want[j].Payload) {
							err = fmt.Errorf("event %d: payload %v, want %v", j, got[j].Payload, want[j].Payload)
						}
					}
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d note %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
