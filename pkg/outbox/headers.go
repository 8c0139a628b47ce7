package outbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The stored form of a message's headers, in the SQL outbox backends'
// headers column (NULL for none):
//
//	0x01 uvarint(count) { uvarint(len(key)) key uvarint(len(value)) value }…
//
// A binary form: the relay decodes it for every message it publishes, and
// it is about half the size of the JSON form it replaced
// ([{"key":"…","value":"<base64>"},…]), which began with '[' and is
// still decoded, so that rows an older writer left in an outbox are
// published after an upgrade.
const headersBinary = 0x01

// EncodeHeaders returns the stored form of headers (nil for none).
func EncodeHeaders(hs []Header) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	n := 1 + binary.MaxVarintLen32
	for _, h := range hs {
		n += 2*binary.MaxVarintLen32 + len(h.Key) + len(h.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, headersBinary)
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = binary.AppendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.AppendUvarint(b, uint64(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b, nil
}

// DecodeHeaders reverses EncodeHeaders. The values are copies: nothing
// the result holds aliases b.
func DecodeHeaders(b []byte) ([]Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] == headersBinary {
		return DecodeHeadersAlias(nil, append([]byte(nil), b...))
	}
	return decodeJSONHeaders(b)
}

// DecodeHeadersAlias is DecodeHeaders for a backend that manages its own
// buffers: it appends the headers to dst, and their values alias b, which
// must therefore stay unchanged while they are used. (Values of the
// former JSON form are decoded into new memory.) The standard header names
// are returned without allocating.
func DecodeHeadersAlias(dst []Header, b []byte) ([]Header, error) {
	if len(b) == 0 {
		return dst, nil
	}
	if b[0] != headersBinary {
		hs, err := decodeJSONHeaders(b)
		return append(dst, hs...), err
	}
	rest := b[1:]
	count, rest, err := uvarint(rest)
	if err != nil {
		return nil, err
	}
	if count > uint64(len(rest)/2) { // each header takes at least two bytes
		return nil, errors.New("decode headers: count exceeds the input")
	}
	if dst == nil {
		dst = make([]Header, 0, count)
	}
	for range count {
		var key, value []byte
		if key, rest, err = field(rest); err != nil {
			return nil, err
		}
		if value, rest, err = field(rest); err != nil {
			return nil, err
		}
		dst = append(dst, Header{Key: internKey(key), Value: value})
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("decode headers: %d trailing bytes", len(rest))
	}
	return dst, nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, errors.New("decode headers: truncated or invalid length")
	}
	return v, b[n:], nil
}

// field reads one length-prefixed field; its bytes alias b and are capped
// at their length, so appending to one cannot overwrite the next.
func field(b []byte) (f, rest []byte, err error) {
	n, b, err := uvarint(b)
	if err != nil {
		return nil, nil, err
	}
	if n > uint64(len(b)) {
		return nil, nil, errors.New("decode headers: field exceeds the input")
	}
	return b[:n:n], b[n:], nil
}

// internKey returns the standard header names without allocating.
func internKey(k []byte) string {
	switch string(k) {
	case HeaderEventID:
		return HeaderEventID
	case HeaderEventType:
		return HeaderEventType
	case HeaderAggregateID:
		return HeaderAggregateID
	case HeaderAggregateType:
		return HeaderAggregateType
	case HeaderAggregateVersion:
		return HeaderAggregateVersion
	case HeaderTimestamp:
		return HeaderTimestamp
	case HeaderContentType:
		return HeaderContentType
	case HeaderCorrelationID:
		return HeaderCorrelationID
	case HeaderCausationID:
		return HeaderCausationID
	}
	return string(k)
}

// jsonHeader is one header of the former stored form.
type jsonHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// decodeJSONHeaders decodes the former stored form.
func decodeJSONHeaders(b []byte) ([]Header, error) {
	var w []jsonHeader
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode headers: %w", err)
	}
	hs := make([]Header, len(w))
	for i, h := range w {
		hs[i] = Header(h)
	}
	return hs, nil
}
