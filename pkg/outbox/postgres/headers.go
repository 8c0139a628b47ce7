package postgres

import (
	"encoding/binary"

	"github.com/esflow/esflow/pkg/outbox"
)

// decodeHeaders is [outbox.DecodeHeaders] for the relay's fetch. With an
// arena, the stored bytes are copied into it once and the headers'
// values alias that copy, and the headers themselves are carved from it:
// no allocation per message. Without one it is outbox.DecodeHeaders.
func decodeHeaders(b []byte, a *arena) ([]outbox.Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if a == nil {
		return outbox.DecodeHeaders(b) //nolint:wrapcheck // already "decode headers: …"
	}
	// The binary form's count follows its format byte; room for exactly
	// that many headers (a wrong guess only costs an allocation).
	n := 0
	if len(b) > 1 {
		if c, k := binary.Uvarint(b[1:]); k > 0 && c <= uint64(len(b)) {
			n = int(c)
		}
	}
	return outbox.DecodeHeadersAlias(a.headers(n), a.copy(b)) //nolint:wrapcheck
}
