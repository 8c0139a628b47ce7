package eventstore

import (
	"strings"
	"testing"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/outbox"
)

// benchLine is a ~250-byte JSON event.
type benchLine struct {
	Seq      int    `json:"seq"`
	Account  string `json:"account"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Memo     string `json:"memo"`
}

type benchAccount struct {
	aggregate.Root
	Lines int `json:"lines"`
}

func (a *benchAccount) Apply(aggregate.Event) { a.Lines++ }

// benchEvents returns n sealed, chained events of one new aggregate.
func benchEvents(b *testing.B, n int) (*aggregate.Registry, []aggregate.Event) {
	reg := aggregate.NewRegistry()
	aggregate.Register[benchLine](reg)
	memo := strings.Repeat("x", 170)
	a := new(benchAccount)
	err := aggregate.Create(a, &benchLine{Account: "ACC-00000000", Amount: 12345, Currency: "EUR", Memo: memo})
	for i := 1; i < n && err == nil; i++ {
		err = aggregate.Trigger(a, &benchLine{Seq: i, Account: "ACC-00000000", Amount: 12345, Currency: "EUR", Memo: memo})
	}
	if err != nil {
		b.Fatal(err)
	}
	return reg, a.PendingEvents()
}

// BenchmarkEncodeWithOutbox is the client CPU of appending one event with
// the outbox on, before any SQL: record, outbox message and its stored
// headers.
func BenchmarkEncodeWithOutbox(b *testing.B) {
	reg, events := benchEvents(b, 1)
	s := MustNew(nil, reg, Options{})
	s.outbox = &outbox.Builder{Registry: reg}
	b.ReportAllocs()
	for b.Loop() {
		_, msgs, err := s.encodeWithMessages(events, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := outbox.EncodeHeaders(msgs[0].Headers); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEvents is the client CPU of loading 100 events once read:
// decode (envelope, hash check, payload) and chain verification.
func BenchmarkDecodeEvents(b *testing.B) {
	reg, events := benchEvents(b, 100)
	s := MustNew(nil, reg, Options{})
	recs, err := s.Encode(events...)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := s.Decode(recs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := aggregate.VerifyChain("", got); err != nil {
			b.Fatal(err)
		}
	}
}

// mappings are the record transcodings a store can be opened with.
func mappings(b *testing.B) []struct {
	name string
	opts Options
} {
	key, err := GenerateCipherKey()
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		opts Options
	}{
		{"plain", Options{}},
		{"encrypted", Options{Cipher: c}},
		{"compressed+encrypted", Options{Cipher: c, Compress: true}},
	}
}

// BenchmarkMapRecord is the record mapping of one ~250-byte event each
// way, with each transcoding: Encode (payload JSON, hash check, envelope,
// compression, encryption) and Decode (the reverse, payload decode and
// hash check included).
func BenchmarkMapRecord(b *testing.B) {
	for _, m := range mappings(b) {
		reg, events := benchEvents(b, 1)
		s := MustNew(nil, reg, m.opts)
		b.Run(m.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Encode(events...); err != nil {
					b.Fatal(err)
				}
			}
		})
		recs, err := s.Encode(events...)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(m.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Decode(recs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCipher is AES-256-GCM on a stored record's size (~500 bytes).
func BenchmarkCipher(b *testing.B) {
	key, err := GenerateCipherKey()
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	plain := []byte(strings.Repeat("x", 500))
	ad := []byte("stream/position")
	sealed, err := c.Encrypt(plain, ad)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encrypt", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := c.Encrypt(plain, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decrypt", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := c.Decrypt(sealed, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}
