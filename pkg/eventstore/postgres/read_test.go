package postgres_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

// TestReadStreamLong: a stream long enough to fill several of the shared
// data buffers reads back record for record, with topics that change,
// and each record's Data stays its own when appended to.
func TestReadStreamLong(t *testing.T) {
	s := newStore(t, postgres.Config{})
	id := uuid.New()
	var want []eventstore.Record
	for i := range 600 {
		want = append(want, eventstore.Record{StreamID: id, Position: uint64(i), Topic: fmt.Sprintf("T%d", i/100),
			Data: bytes.Repeat([]byte{byte(i)}, 100+i%300)})
	}
	for i := 0; i < len(want); i += 200 {
		if err := s.Append(testCtx(t), want[i:i+200]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ReadStream(testCtx(t), id, eventstore.StreamQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].StreamID != id || got[i].Position != want[i].Position || got[i].Topic != want[i].Topic || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("record %d: %+v", i, got[i])
		}
	}
	_ = append(got[0].Data, 0xff)
	if !bytes.Equal(got[1].Data, want[1].Data) {
		t.Fatal("appending to one record's data changed the next")
	}
}
