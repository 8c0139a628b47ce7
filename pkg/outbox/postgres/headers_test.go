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

// checkSame fails unless decodeHeaders and outbox.DecodeHeaders agree on b.
func checkSame(t *testing.T, b []byte) {
	t.Helper()
	want, werr := outbox.DecodeHeaders(b)
	got, gerr := decodeHeaders(b, nil)
	if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeHeaders(%q) = %q, %v; outbox.DecodeHeaders: %q, %v", b, got, gerr, want, werr)
	}
}

func TestDecodeHeadersMatchesJSON(t *testing.T) {
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
		"empty value":  enc([]outbox.Header{{Key: "k"}, {Key: "", Value: []byte{}}}),
		"binary value": enc([]outbox.Header{{Key: "bin", Value: []byte{0, 1, 2, 0xff, '"', '\\'}}}),
		"escaped key":  enc([]outbox.Header{{Key: "a<b>&\"c\\", Value: []byte("x")}}),
		"unicode key":  enc([]outbox.Header{{Key: "clé", Value: []byte("x")}}),
		"empty list":   []byte(`[]`),
		"null":         []byte(`null`),
		"null value":   []byte(`[{"key":"k","value":null}]`),
		"spaces":       []byte(`[ {"key": "k", "value": "dg=="} ]`),
		"key order":    []byte(`[{"value":"dg==","key":"k"}]`),
		"extra field":  []byte(`[{"key":"k","value":"dg==","x":1}]`),
		"bad base64":   []byte(`[{"key":"k","value":"d*=="}]`),
		"newline b64":  []byte("[{\"key\":\"k\",\"value\":\"dg\\n==\"}]"),
		"raw newline":  []byte("[{\"key\":\"k\",\"value\":\"dg\n==\"}]"),
		"no padding":   []byte(`[{"key":"k","value":"dg"}]`),
		"truncated":    []byte(`[{"key":"k","value":"dg==`),
		"trailing":     []byte(`[{"key":"k","value":"dg=="},]`),
		"no comma":     []byte(`[{"key":"k","value":"dg=="}{"key":"k","value":"dg=="}]`),
		"upper names":  []byte(`[{"KEY":"k","VALUE":"dg=="}]`),
		"not json":     []byte(`garbage`),
		"closing only": []byte(`]`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) { checkSame(t, b) })
	}
	hs, ok := fastDecodeHeaders(cases["standard"], new(arena))
	if !ok || !reflect.DeepEqual(hs, sampleHeaders()) {
		t.Fatalf("fast path did not take the standard headers: %q %v", hs, ok)
	}
}

func FuzzDecodeHeaders(f *testing.F) {
	b, _ := outbox.EncodeHeaders(sampleHeaders())
	f.Add(b)
	f.Add([]byte(`[{"key":"k","value":""}]`))
	f.Add([]byte(`[{"key":"k\u00e9","value":"dg=="}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSame(t, b)
		// Through a shared arena too, as a fetch decodes: earlier
		// messages' headers must not change.
		var a arena
		first, err1 := decodeHeaders(b, &a)
		want, _ := outbox.DecodeHeaders(b)
		if _, err := decodeHeaders(b, &a); err == nil && err1 == nil && !reflect.DeepEqual(first, want) {
			t.Fatalf("arena reuse changed %q", first)
		}
	})
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
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := outbox.DecodeHeaders(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
