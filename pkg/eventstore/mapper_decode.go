package eventstore

import (
	"encoding/hex"
	"encoding/json"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// decodeEnvelopeFast parses body when it is exactly in the form
// envelope.appendJSON writes (keys in that order, each once, strings
// without escapes or non-ASCII bytes, no whitespace) and reports whether
// it did. Anything else is left to encoding/json.
//
// Why: loading an aggregate decodes every one of its events, and
// json.Unmarshal of the envelope (a validating scan of the whole
// document, then a reflective decode that scans the payload again to
// copy it into a RawMessage) was ~40% of the client CPU of a load.
//
// It does not validate the payload: the caller must only accept the
// result once the payload has decoded with encoding/json (which
// validates it), and must decode with encoding/json on any failure, so
// that errors stay exactly those of the encoding/json path. Everything
// before the payload is checked here, so a body accepted here and whose
// payload is valid JSON is a valid document that json.Unmarshal decodes
// to the same envelope.
func decodeEnvelopeFast(b []byte, env *envelope) bool {
	p := scanner{b: b}
	if !p.lit(`{"id":"`) || !p.uuid(&env.ID) || !p.lit(`"`) {
		return false
	}
	if p.lit(`,"aggregate_type":`) && !p.str(&env.AggregateType) {
		return false
	}
	if p.lit(`,"schema":`) && !p.int(&env.Schema) {
		return false
	}
	if !p.lit(`,"time":`) || !p.str(&env.Time) {
		return false
	}
	if p.lit(`,"metadata":`) {
		v, ok := p.object()
		if !ok {
			return false
		}
		var md aggregate.Metadata
		if json.Unmarshal(v, &md) != nil {
			return false
		}
		env.Metadata = &md
	}
	if p.lit(`,"previous_hash":`) && !p.str(&env.PreviousHash) {
		return false
	}
	if p.lit(`,"hash":`) && !p.str(&env.Hash) {
		return false
	}
	if !p.lit(`,"payload":`) {
		return false
	}
	// The payload runs to the document's last byte, its closing brace.
	// Only objects are taken here (every struct payload is one); its
	// validity is the caller's check (see above).
	rest := b[p.i:]
	if len(rest) < 3 || rest[0] != '{' || rest[len(rest)-1] != '}' || rest[len(rest)-2] != '}' {
		return false
	}
	env.Payload = rest[:len(rest)-1]
	return true
}

// scanner reads the envelope's fixed layout.
type scanner struct {
	b []byte
	i int
}

// lit consumes s when the input continues with it.
func (p *scanner) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a JSON string made of printable ASCII without escapes: the
// bytes are the value.
func (p *scanner) str(dst *string) bool {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			*dst = string(p.b[p.i+1 : j])
			p.i = j + 1
			return true
		case c < 0x20 || c > 0x7e || c == '\\':
			return false
		}
	}
	return false
}

// int reads a positive JSON integer of at most 9 digits.
func (p *scanner) int(dst *int) bool {
	n, j := 0, p.i
	for ; j < len(p.b) && j-p.i < 10 && p.b[j] >= '0' && p.b[j] <= '9'; j++ {
		n = n*10 + int(p.b[j]-'0')
	}
	if j == p.i || j-p.i > 9 || p.b[p.i] == '0' {
		return false
	}
	*dst, p.i = n, j
	return true
}

// uuid reads the canonical 36-character form (either case of hex), as
// uuid.UUID.UnmarshalText would.
func (p *scanner) uuid(dst *uuid.UUID) bool {
	if len(p.b)-p.i < 36 {
		return false
	}
	s := p.b[p.i : p.i+36]
	if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	var id uuid.UUID
	for _, part := range [...]struct{ from, to, at int }{{0, 8, 0}, {9, 13, 4}, {14, 18, 6}, {19, 23, 8}, {24, 36, 10}} {
		if _, err := hex.Decode(id[part.at:], s[part.from:part.to]); err != nil {
			return false
		}
	}
	*dst, p.i = id, p.i+36
	return true
}

// object returns the JSON object starting at the current position,
// delimited by matching braces outside strings. The caller validates it.
func (p *scanner) object() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, false
	}
	depth, inString := 0, false
	for j := p.i; j < len(p.b); j++ {
		c := p.b[j]
		if inString {
			switch c {
			case '\\':
				j++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				v := p.b[p.i : j+1]
				p.i = j + 1
				return v, true
			}
		}
	}
	return nil, false
}
