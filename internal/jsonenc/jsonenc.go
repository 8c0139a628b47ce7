// Package jsonenc holds the append-style JSON pieces shared by the
// hand-written encoders of the stored event envelope (pkg/eventstore)
// and the Kafka message envelope and headers (pkg/outbox). Their output
// is byte-identical to encoding/json's.
package jsonenc

import (
	"encoding/hex"
	"encoding/json"

	"github.com/google/uuid"
)

// AppendUUID appends the canonical text form of id (no quotes).
func AppendUUID(b []byte, id uuid.UUID) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], id[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], id[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], id[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], id[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], id[10:])
	return append(b, buf[:]...)
}

// AppendString appends s as encoding/json writes it: printable ASCII
// without quotes, backslashes or HTML-special characters is copied as is,
// anything else goes through encoding/json.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
