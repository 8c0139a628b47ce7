package aggregate

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// TimeFormat is how event times are written, in hashes and in storage.
const TimeFormat = time.RFC3339Nano

// HashEvent returns the hex SHA-256 of an event's canonical bytes: a
// version tag and, each prefixed by its length, the event id, aggregate
// id, aggregate type, version, type name, time, the payload's JSON
// encoding and the previous hash. Metadata is not covered.
//
// payload must be the exact bytes that are stored; verifying a loaded
// event hashes the stored bytes, not a re-encoding, so upcasting an old
// payload never breaks its chain.
func HashEvent(e Event, payload []byte) string {
	// The canonical bytes are built in one buffer and hashed at once: the
	// save path hashes every event (to catch a payload changed after it
	// was triggered), so this avoids a hasher and a conversion per field.
	var stack [512]byte
	buf := stack[:0]
	field := func(b []byte) { buf = append(binary.BigEndian.AppendUint64(buf, uint64(len(b))), b...) }
	fieldString := func(s string) { buf = append(binary.BigEndian.AppendUint64(buf, uint64(len(s))), s...) }
	var num [20]byte
	var ts [40]byte
	fieldString("esflow.event.v1")
	field(e.ID[:])
	field(e.AggregateID[:])
	fieldString(e.AggregateType)
	field(strconv.AppendUint(num[:0], e.Version, 10))
	fieldString(e.Type)
	field(e.Time.UTC().AppendFormat(ts[:0], TimeFormat))
	field(payload)
	fieldString(e.PreviousHash)
	sum := sha256.Sum256(buf)
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], sum[:])
	return string(out[:])
}

// MarshalPayload returns the JSON encoding of an event payload that the
// hash is computed over.
func MarshalPayload(payload any) ([]byte, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("aggregate: encode %s payload: %w", TypeName(payload), err)
	}
	return b, nil
}

// Seal fills e.Hash from its fields and previous hash. Events built by
// hand (the bring-your-own model) call it before they are stored; events
// triggered on a [Root] are sealed already.
func Seal(e *Event) error {
	b, err := MarshalPayload(e.Payload)
	if err != nil {
		return err
	}
	e.Hash = HashEvent(*e, b)
	return nil
}

// VerifyChain checks that each event links to the one before it, starting
// from head (the hash of the event before the first, "" for a stream that
// starts at version 0), and that versions are consecutive. It returns the
// new head.
func VerifyChain(head string, events []Event) (string, error) {
	for i, e := range events {
		if i > 0 && e.Version != events[i-1].Version+1 {
			return head, fmt.Errorf("aggregate %s: version %d follows %d: %w", e.AggregateID, e.Version, events[i-1].Version, ErrIntegrity)
		}
		if e.PreviousHash != head {
			return head, fmt.Errorf("aggregate %s version %d: previous hash %q does not match head %q: %w",
				e.AggregateID, e.Version, e.PreviousHash, head, ErrIntegrity)
		}
		head = e.Hash
	}
	return head, nil
}
