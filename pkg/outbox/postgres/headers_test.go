package postgres

import (
	"reflect"
	"testing"

	"github.com/esflow/esflow/pkg/outbox"
)

func sampleHeaders() []outbox.Header {
	return []outbox.Header{
		{Key: outbox.HeaderEventID, Value: []byte("76fb3f18-156c-4bd6-8580-c28c283b69f7")},
		{Key: outbox.HeaderEventType, Value: []byte("Created")},
		{Key: outbox.HeaderAggregateID, Value: []byte("0c6e0d0a-5d43-4d3c-9d55-7d4c16fd0a2e")},
		{Key: outbox.HeaderAggregateType, Value: []byte("World")},
		{Key: outbox.HeaderAggregateVersion, Value: []byte("12")},
		{Key: outbox.HeaderTimestamp, Value: []byte("2026-11-30T06:41:56.123456Z")},
		{Key: outbox.HeaderContentType, Value: []byte("application/json")},
	}
}

// checkSame fails unless decodeHeaders (through an arena, as a fetch
// decodes) and outbox.DecodeHeaders agree on b.
func checkSame(t *testing.T, b []byte) {
	t.Helper()
	want, werr := outbox.DecodeHeaders(b)
	var a arena
	got, gerr := decodeHeaders(b, &a)
	if (werr == nil) != (gerr == nil) || (werr == nil && !reflect.DeepEqual(got, want)) {
		t.Fatalf("decodeHeaders(%q) = %q, %v; outbox.DecodeHeaders: %q, %v", b, got, gerr, want, werr)
	}
	// Earlier messages' headers must not change when the arena is used
	// again, nor when the row buffer they came from is reused.
	second, _ := decodeHeaders(b, &a)
	for i := range b {
		b[i] ^= 0xff
	}
	if gerr == nil && (!reflect.DeepEqual(got, want) || !reflect.DeepEqual(second, want)) {
		t.Fatalf("arena reuse or input reuse changed %q", got)
	}
}

func TestDecodeHeaders(t *testing.T) {
	enc := func(hs []outbox.Header) []byte {
		b, err := outbox.EncodeHeaders(hs)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string][]byte{
		"standard":     enc(sampleHeaders()),
		"one":          enc([]outbox.Header{{Key: "k", Value: []byte("v")}}),
		"empty value":  enc([]outbox.Header{{Key: "k", Value: []byte{}}, {Key: "", Value: []byte{}}}),
		"binary value": enc([]outbox.Header{{Key: "bin", Value: []byte{0, 1, 2, 0xff, '"', '\\'}}}),
		"truncated":    enc(sampleHeaders())[:40],
		"json":         []byte(`[{"key":"k","value":"dg=="}]`),
		"json escaped": []byte(`[{"key":"k\u00e9","value":""}]`),
		"bad json":     []byte(`[{"key":"k","value":"d*=="}]`),
		"not either":   []byte(`garbage`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { checkSame(t, b) })
	}
	var a arena
	hs, err := decodeHeaders(enc(sampleHeaders()), &a)
	if err != nil || !reflect.DeepEqual(hs, sampleHeaders()) {
		t.Fatalf("standard headers: %q, %v", hs, err)
	}
}

func FuzzDecodeHeaders(f *testing.F) {
	b, _ := outbox.EncodeHeaders(sampleHeaders())
	f.Add(b)
	f.Add([]byte(`[{"key":"k","value":""}]`))
	f.Add([]byte{1, 1, 1, 'k', 0})
	f.Fuzz(func(t *testing.T, b []byte) { checkSame(t, b) })
}

func BenchmarkDecodeHeaders(b *testing.B) {
	enc, err := outbox.EncodeHeaders(sampleHeaders())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := decodeHeaders(enc, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("outbox.DecodeHeaders", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := outbox.DecodeHeaders(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
