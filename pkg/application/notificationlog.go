package application

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
)

// ErrBadSection reports a malformed notification log section id.
var ErrBadSection = errors.New("application: bad section id")

// MaxSectionSize caps how many notifications one section request returns.
const MaxSectionSize = 1000

// Item is one notification as served in a section: the stored record with
// its global id. Data is the record's stored bytes (encrypted when the
// application encrypts); JSON carries it as base64.
type Item struct {
	ID                uint64    `json:"id"`
	OriginatorID      uuid.UUID `json:"originator_id"`
	OriginatorVersion uint64    `json:"originator_version"`
	Topic             string    `json:"topic"`
	Data              []byte    `json:"data"`
}

// Record returns the item as an event store record, for decoding with
// eventstore.Mapper.
func (it Item) Record() eventstore.Record {
	return eventstore.Record{StreamID: it.OriginatorID, Position: it.OriginatorVersion, Topic: it.Topic, Data: it.Data}
}

// Section is a contiguous range "a,b" of the notification log. Next is
// the id of the following section when this one is complete (every
// notification with an id <= b exists and is included), and empty when
// the log has not reached b yet: read the same section again later.
type Section struct {
	ID    string `json:"id"`
	Items []Item `json:"items"`
	Next  string `json:"next_id,omitempty"`
}

// NotificationLog serves sections of a notification log. [LocalLog] reads
// the application's own store; [RemoteLog] reads another process's log
// over HTTP. [Reader] follows either.
type NotificationLog interface {
	Section(ctx context.Context, id string) (Section, error)
}

// ParseSectionID parses "a,b" (1 <= a <= b, at most MaxSectionSize ids).
func ParseSectionID(id string) (first, last uint64, err error) {
	a, b, ok := strings.Cut(id, ",")
	if ok {
		first, err = strconv.ParseUint(strings.TrimSpace(a), 10, 64)
		if err == nil {
			last, err = strconv.ParseUint(strings.TrimSpace(b), 10, 64)
		}
	}
	if !ok || err != nil || first < 1 || last < first || last-first >= MaxSectionSize {
		return 0, 0, fmt.Errorf("%w: %q (want \"a,b\" with 1 <= a <= b and at most %d ids)", ErrBadSection, id, MaxSectionSize)
	}
	return first, last, nil
}

// SectionID formats a section id.
func SectionID(first, last uint64) string { return fmt.Sprintf("%d,%d", first, last) }

// LocalLog presents a recorder's notifications in sections of a fixed
// size: "1,10", "11,20", … (any "a,b" is accepted).
type LocalLog struct {
	rec    eventstore.Recorder
	size   int
	topics []string
}

// NewLocalLog returns the log of rec with the given section size (10 when
// size <= 0). Topics, when given, filter the items (ids stay global).
func NewLocalLog(rec eventstore.Recorder, size int, topics ...string) *LocalLog {
	if size <= 0 {
		size = 10
	}
	return &LocalLog{rec: rec, size: min(size, MaxSectionSize), topics: topics}
}

// SectionSize returns the size of the log's sections.
func (l *LocalLog) SectionSize() int { return l.size }

// Section returns a section. "current" names the section holding the
// latest notification.
func (l *LocalLog) Section(ctx context.Context, id string) (Section, error) {
	if id == "current" {
		max, err := l.rec.MaxNotificationID(ctx)
		if err != nil {
			return Section{}, err
		}
		first := uint64(1)
		if max > 0 {
			first = (max-1)/uint64(l.size)*uint64(l.size) + 1
		}
		id = SectionID(first, first+uint64(l.size)-1)
	}
	first, last, err := ParseSectionID(id)
	if err != nil {
		return Section{}, err
	}
	// Read the high-water mark before the section: every id up to it is
	// assigned and visible, so if it covers the section's end, the section
	// read next is complete and a reader may move past it.
	max, err := l.rec.MaxNotificationID(ctx)
	if err != nil {
		return Section{}, err
	}
	ns, err := l.rec.ReadNotifications(ctx, eventstore.NotificationQuery{Start: first, Limit: int(last - first + 1), Topics: l.topics})
	if err != nil {
		return Section{}, err
	}
	sec := Section{ID: SectionID(first, last), Items: make([]Item, 0, len(ns))}
	for _, n := range ns {
		if n.ID > last {
			break
		}
		sec.Items = append(sec.Items, Item{ID: n.ID, OriginatorID: n.StreamID, OriginatorVersion: n.Position, Topic: n.Topic, Data: n.Data})
	}
	if max >= last {
		size := last - first + 1
		sec.Next = SectionID(last+1, last+size)
	}
	return sec, nil
}

// Reader follows a notification log from a position, never skipping and
// never repeating a notification.
type Reader struct {
	log  NotificationLog
	size uint64
	// Position is the id of the last notification read (0: none).
	Position uint64
}

// NewReader returns a reader of log that starts after notification id
// `after` and requests sections of `size` ids (10 when size <= 0).
func NewReader(log NotificationLog, after uint64, size int) *Reader {
	if size <= 0 {
		size = 10
	}
	return &Reader{log: log, Position: after, size: uint64(min(size, MaxSectionSize))}
}

// Read returns every notification available after Position and advances
// Position past them.
func (r *Reader) Read(ctx context.Context) ([]Item, error) {
	var out []Item
	for {
		first := r.Position + 1
		sec, err := r.log.Section(ctx, SectionID(first, first+r.size-1))
		if err != nil {
			return out, err
		}
		for _, it := range sec.Items {
			if it.ID < first {
				continue
			}
			out = append(out, it)
			r.Position = it.ID
		}
		if sec.Next == "" {
			return out, nil
		}
		// The section is complete: ids up to its end are all read, even
		// those a topic filter left out.
		_, last, err := ParseSectionID(sec.ID)
		if err != nil {
			return out, err
		}
		r.Position = max(r.Position, last)
	}
}
