package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// Record is the stored form of one event: the "sequenced item" of the
// seed pages. StreamID and Position identify it (aggregate id and
// version); Topic names the event type; Data is the encoded, optionally
// compressed and encrypted, event envelope.
//
// Table and column names are configurable per backend (see [Schema]);
// Record is the same whatever they are called.
type Record struct {
	StreamID uuid.UUID
	Position uint64
	Topic    string
	Data     []byte
}

// Notification is a record in the application's global order. IDs start
// at 1 and increase by one, in the order in which records became visible
// to readers: a reader that has seen ID n has seen every record that will
// ever get an ID <= n.
type Notification struct {
	ID uint64
	Record
}

// StreamQuery selects a range of one stream. The zero value selects the
// whole stream in ascending order.
type StreamQuery struct {
	// After, when set, excludes positions <= *After.
	After *uint64
	// UpTo, when set, excludes positions > *UpTo (inclusive bound).
	UpTo *uint64
	// Limit caps the number of records returned; 0 means no limit.
	Limit int
	// Descending returns the highest positions first. Limit then keeps
	// the last records of the range.
	Descending bool
}

// Matches reports whether position p lies inside the query's bounds
// (ignoring Limit). Backends without a query language use it.
func (q StreamQuery) Matches(p uint64) bool {
	if q.After != nil && p <= *q.After {
		return false
	}
	if q.UpTo != nil && p > *q.UpTo {
		return false
	}
	return true
}

// NotificationQuery selects a section of the notification log.
type NotificationQuery struct {
	// Start is the first notification ID to return (IDs start at 1).
	Start uint64
	// Limit caps the number of notifications returned; it must be > 0.
	Limit int
	// Topics, when not empty, keeps only records with one of these topics.
	Topics []string
}

// Recorder stores records. It is the interface a backend implements; the
// [EventStore] maps domain events onto it. Implementations must pass
// eventstoretest.Run.
type Recorder interface {
	// Append writes records of one or many streams atomically. For each
	// stream the records must have contiguous positions, and the first one
	// is the expected version of that stream: it must equal the number of
	// records the stream already has. If any (stream, position) already
	// exists, or a first position lies beyond the stream's end, Append
	// writes nothing and returns an error matching ErrConcurrency.
	Append(ctx context.Context, records []Record) error

	// ReadStream returns the records of one stream selected by q, in
	// position order (or reverse with q.Descending). A stream that does
	// not exist yields no records and no error.
	ReadStream(ctx context.Context, streamID uuid.UUID, q StreamQuery) ([]Record, error)

	// ReadNotifications returns records in global order with
	// ID >= q.Start, at most q.Limit of them. It never returns a record
	// with ID n while a record with an ID < n could still become visible.
	ReadNotifications(ctx context.Context, q NotificationQuery) ([]Notification, error)

	// MaxNotificationID returns the highest notification ID assigned so
	// far, or 0 when the log is empty.
	MaxNotificationID(ctx context.Context) (uint64, error)
}

// SnapshotRecorder stores snapshots: records of the aggregate state at a
// position, kept apart from the events. Backends implement it next to
// Recorder.
type SnapshotRecorder interface {
	// SaveSnapshot stores a snapshot; saving the same (stream, position)
	// twice replaces it.
	SaveSnapshot(ctx context.Context, snapshot Record) error
	// LatestSnapshot returns the snapshot with the highest position <=
	// upTo (nil for no bound); ok is false when there is none.
	LatestSnapshot(ctx context.Context, streamID uuid.UUID, upTo *uint64) (snap Record, ok bool, err error)
}

// ValidateBatch checks what every backend must refuse before writing:
// empty ids or topics, and positions that are not contiguous per stream
// or repeat within the batch. It returns an error matching
// ErrInvalidRecord (or ErrConcurrency for a repeated position, which is
// what two writers of the same version are).
func ValidateBatch(records []Record) error {
	next := make(map[uuid.UUID]uint64, 4)
	for _, r := range records {
		if r.StreamID == uuid.Nil {
			return &Error{Op: "append", Err: fmt.Errorf("%w: nil stream id", ErrInvalidRecord)}
		}
		if r.Topic == "" {
			return &Error{Op: "append", StreamID: r.StreamID, Position: r.Position, Err: fmt.Errorf("%w: empty topic", ErrInvalidRecord)}
		}
		if want, seen := next[r.StreamID]; seen && r.Position != want {
			return &Error{Op: "append", StreamID: r.StreamID, Position: r.Position,
				Err: fmt.Errorf("%w: positions of one stream must be contiguous (want %d)", ErrInvalidRecord, want)}
		}
		next[r.StreamID] = r.Position + 1
	}
	return nil
}

// ConcurrencyError builds the error a backend returns when an append
// conflicts with existing records.
func ConcurrencyError(streamID uuid.UUID, position uint64, cause error) error {
	err := ErrConcurrency
	if cause != nil {
		err = fmt.Errorf("%w: %v", ErrConcurrency, cause)
	}
	return &Error{Op: "append", StreamID: streamID, Position: position, Err: err}
}
