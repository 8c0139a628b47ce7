package aggregate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// TestHashEventIsStable pins the canonical hash: stored chains were
// sealed with it, so any change to HashEvent's bytes breaks every store.
// The want values were computed by the original field-by-field hasher.
func TestHashEventIsStable(t *testing.T) {
	e := aggregate.Event{
		ID:            uuid.MustParse("0b6f2c1e-8f1a-4c2b-9d3e-5f6a7b8c9d0e"),
		AggregateID:   uuid.MustParse("5e1c0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"),
		AggregateType: "World", Version: 3, Type: "SomethingHappened",
		Time:         time.Date(2026, 11, 22, 5, 40, 0, 123456000, time.UTC),
		PreviousHash: "abc",
	}
	if got, want := aggregate.HashEvent(e, []byte(`{"what":"dinosaurs"}`)), "4bb0be9afff4b865361d44c024654f54d62aaca7685e252f4bc20dd8434ed5aa"; got != want {
		t.Fatalf("HashEvent = %s, want %s", got, want)
	}
	// Larger than the stack buffer.
	big := []byte(`{"what":"` + strings.Repeat("x", 2000) + `"}`)
	if got, want := aggregate.HashEvent(e, big), "4123462edceabbc6821604e4f158cc53aec2f1e8d4b747fe1a543c56de710d2b"; got != want {
		t.Fatalf("HashEvent(big) = %s, want %s", got, want)
	}
}

// BenchmarkHashEvent is the hash chain's cost per event: the payload's
// JSON (as Seal computes it) and the SHA-256 over the canonical fields.
func BenchmarkHashEvent(b *testing.B) {
	payload := map[string]any{"account": "ACC-00000000", "amount": 12345, "currency": "EUR", "memo": strings.Repeat("x", 170)}
	e := aggregate.Event{Type: "Recorded", AggregateType: "Account", Version: 7, Time: time.Now(), Payload: payload, PreviousHash: strings.Repeat("a", 64)}
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := aggregate.Seal(&e); err != nil {
				b.Fatal(err)
			}
		}
	})
	data, err := aggregate.MarshalPayload(payload)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("hash", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_ = aggregate.HashEvent(e, data)
		}
	})
}
