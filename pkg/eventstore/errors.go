package eventstore

import (
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
)

// Sentinel errors callers branch on with [errors.Is].
var (
	// ErrConcurrency reports that an append lost an optimistic-concurrency
	// race: a record already exists at one of the positions being written.
	// Nothing of the batch was written; reload the aggregate and retry.
	ErrConcurrency = errors.New("eventstore: concurrency conflict")

	// ErrNotFound reports that a stream (or aggregate) does not exist or
	// has been discarded.
	ErrNotFound = errors.New("eventstore: not found")

	// ErrIntegrity reports that stored data failed verification: a broken
	// hash chain, a record that does not decode, or ciphertext that does
	// not authenticate. It is the same value as aggregate.ErrIntegrity.
	ErrIntegrity = aggregate.ErrIntegrity

	// ErrUnknownEventType reports a topic that has no registered Go type.
	// It is the same value as aggregate.ErrUnknownEventType.
	ErrUnknownEventType = aggregate.ErrUnknownEventType

	// ErrCipher reports a cipher key problem: missing, not base64, or not
	// 32 bytes, or a record that needs a key when none is configured.
	ErrCipher = errors.New("eventstore: cipher key")

	// ErrTooLarge reports an encoded event over the configured size limit.
	ErrTooLarge = errors.New("eventstore: event too large")

	// ErrInvalidIdentifier reports a table or column name from
	// configuration that is not a plain SQL identifier.
	ErrInvalidIdentifier = errors.New("eventstore: invalid SQL identifier")

	// ErrInvalidRecord reports a record that cannot be stored: empty
	// stream id or topic, or a batch whose positions are not contiguous.
	ErrInvalidRecord = errors.New("eventstore: invalid record")

	// ErrClosed reports use of a store after Close.
	ErrClosed = errors.New("eventstore: closed")

	// ErrUnavailable reports that the database could not be reached or
	// used for a while, so the operation may succeed if retried as a
	// whole: connection refused, lost or closed, too many connections,
	// the server shutting down, a deadlock, a serialization failure, a
	// lock wait timeout, SQLite busy. Each backend translates its own
	// driver's errors to it (see [Unavailable]); nothing was committed.
	ErrUnavailable = errors.New("eventstore: database unavailable")
)

// Unavailable marks err, a driver error meaning "retry later", as
// [ErrUnavailable] while keeping it as the cause: errors.Is(e,
// ErrUnavailable) holds and errors.As still finds the driver's own error
// type. It returns nil for nil and err itself when already marked.
// Backends call it at their boundary; callers only match the sentinel.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailableError{cause: err}
}

type unavailableError struct{ cause error }

func (e *unavailableError) Error() string   { return "database unavailable: " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }

// Error carries the context of a failed store operation and unwraps to the
// cause (often one of the sentinels above), so both
// errors.Is(err, ErrConcurrency) and errors.As(err, &*Error) work.
type Error struct {
	Op       string    // operation, e.g. "append", "read stream"
	StreamID uuid.UUID // zero when not specific to one stream
	Position uint64    // position involved, when StreamID is set
	Err      error     // underlying cause
}

func (e *Error) Error() string {
	if e.StreamID != uuid.Nil {
		return fmt.Sprintf("eventstore: %s stream %s at position %d: %v", e.Op, e.StreamID, e.Position, e.Err)
	}
	return fmt.Sprintf("eventstore: %s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }
