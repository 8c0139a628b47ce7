package postgres

import (
	"bytes"
	"encoding/base64"

	"github.com/esflow/esflow/pkg/outbox"
)

// decodeHeaders is [outbox.DecodeHeaders] without reflection, for the
// relay's fetch: with encoding/json, decoding the seven standard headers
// of an envelope cost ~10 µs per message, most of a 1000-row fetch
// (BenchmarkDrain's CPU profile). It reads exactly what
// [outbox.EncodeHeaders] writes, [{"key":"…","value":"<base64>"},…] with
// no whitespace, plain ASCII keys and standard padded base64, and hands
// anything else (escapes, other layouts, invalid input) to
// outbox.DecodeHeaders, so its result is always the same as that
// function's. With an arena, the headers and their values are carved from
// it; without, all values of one message share one allocation.
func decodeHeaders(b []byte, a *arena) ([]outbox.Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if a == nil {
		// Only this message's: one block for all its values.
		a = &arena{block: make([]byte, 0, base64.StdEncoding.DecodedLen(len(b))), exact: true}
	}
	if hs, ok := fastDecodeHeaders(b, a); ok {
		return hs, nil
	}
	return outbox.DecodeHeaders(b) //nolint:wrapcheck // already "decode headers: …"
}

var (
	keyPrefix   = []byte(`{"key":"`)
	valuePrefix = []byte(`","value":"`)
)

// fastDecodeHeaders reports ok=false for any input outside the canonical
// form; it never returns an error of its own.
func fastDecodeHeaders(b []byte, a *arena) (hs []outbox.Header, ok bool) {
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return nil, false
	}
	body := b[1 : len(b)-1]
	if len(body) == 0 {
		return []outbox.Header{}, true
	}
	hs = a.headers(bytes.Count(body, keyPrefix))
	for {
		rest, found := bytes.CutPrefix(body, keyPrefix)
		if !found {
			return nil, false
		}
		end := bytes.IndexByte(rest, '"')
		if end < 0 {
			return nil, false
		}
		key := rest[:end]
		for _, c := range key {
			if c < 0x20 || c >= 0x80 || c == '\\' {
				return nil, false // escapes or non-ASCII: leave to encoding/json
			}
		}
		rest, found = bytes.CutPrefix(rest[end:], valuePrefix)
		if !found {
			return nil, false
		}
		end = bytes.IndexByte(rest, '"')
		if end < 0 || end+1 >= len(rest) || rest[end+1] != '}' {
			return nil, false
		}
		enc := rest[:end]
		dst := a.alloc(base64.StdEncoding.DecodedLen(len(enc)))
		m, err := base64.StdEncoding.Decode(dst, enc)
		if err != nil || bytes.ContainsAny(enc, "\r\n") {
			// encoding/json rejects what base64 would skip (newlines).
			return nil, false
		}
		hs = append(hs, outbox.Header{Key: internKey(key), Value: dst[:m:m]})
		body = rest[end+2:]
		if len(body) == 0 {
			return hs, true
		}
		if body[0] != ',' {
			return nil, false
		}
		body = body[1:]
	}
}

// internKey returns the standard header names without allocating.
func internKey(k []byte) string {
	switch string(k) {
	case outbox.HeaderEventID:
		return outbox.HeaderEventID
	case outbox.HeaderEventType:
		return outbox.HeaderEventType
	case outbox.HeaderAggregateID:
		return outbox.HeaderAggregateID
	case outbox.HeaderAggregateType:
		return outbox.HeaderAggregateType
	case outbox.HeaderAggregateVersion:
		return outbox.HeaderAggregateVersion
	case outbox.HeaderTimestamp:
		return outbox.HeaderTimestamp
	case outbox.HeaderContentType:
		return outbox.HeaderContentType
	case outbox.HeaderCorrelationID:
		return outbox.HeaderCorrelationID
	case outbox.HeaderCausationID:
		return outbox.HeaderCausationID
	}
	return string(k)
}
