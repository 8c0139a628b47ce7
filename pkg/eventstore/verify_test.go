package eventstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/memory"
)

// TestVerifyStream: an intact stream verifies with its head; a reader
// without the Go types (DecodeRaw) still gets the payload JSON; a record
// whose bytes were changed is reported at its version, with the head of
// the events before it; a stream with no events is ErrNotFound.
func TestVerifyStream(t *testing.T) {
	ctx := context.Background()
	for _, opts := range []eventstore.Options{{}, {Cipher: key(t), Compress: true}} {
		rec := memory.New()
		s := eventstore.MustNew(rec, registry(), opts)
		n := newNote(t, "alpha", "beta")
		events := n.PendingEvents()
		if err := s.Append(ctx, events...); err != nil {
			t.Fatal(err)
		}
		v, err := s.VerifyStream(ctx, n.ID())
		if err != nil || !v.OK || v.Events != 3 || v.Head != n.Head() {
			t.Fatalf("intact: %+v %v", v, err)
		}

		recs, err := rec.ReadStream(ctx, n.ID(), eventstore.StreamQuery{})
		if err != nil {
			t.Fatal(err)
		}
		raw := eventstore.Mapper{Registry: aggregate.NewRegistry(), Cipher: opts.Cipher}
		e, err := raw.DecodeRaw(recs[1])
		if p, ok := e.Payload.(json.RawMessage); err != nil || !ok || !bytes.Equal(p, []byte(`{"line":"alpha"}`)) || e.Hash != events[1].Hash {
			t.Fatalf("DecodeRaw without the types: %#v %v", e.Payload, err)
		}

		// Replace the record at version 2 by one whose bytes differ.
		bad := memory.New()
		forged := recs[2]
		forged.Data = append([]byte(nil), forged.Data...)
		forged.Data[len(forged.Data)-3] ^= 1
		if err := bad.Append(ctx, append(recs[:2:2], forged)); err != nil {
			t.Fatal(err)
		}
		v, err = eventstore.MustNew(bad, registry(), opts).VerifyStream(ctx, n.ID())
		if err != nil || v.OK || v.Position != 2 || v.Head != events[1].Hash ||
			!(errors.Is(v.Problem, eventstore.ErrIntegrity) || errors.Is(v.Problem, eventstore.ErrCipher)) {
			t.Fatalf("tampered: %+v %v", v, err)
		}
	}
	if _, err := eventstore.MustNew(memory.New(), registry(), eventstore.Options{}).VerifyStream(ctx, [16]byte{1}); !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatalf("empty stream: %v", err)
	}
}
