package outbox

import (
	"context"
	"errors"
	"hash/fnv"
	"time"
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is one outbox row: a Kafka record waiting to be published.
type Message struct {
	// ID is assigned by the store when the message is written; messages of
	// one key are published in ID order.
	ID      int64
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
	// CreatedAt is set by the store (commit time, approximately).
	CreatedAt time.Time
}

// Header returns the value of the named header, or nil.
func (m Message) Header(key string) []byte {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// KeyHash is the stable hash stores keep beside each message so a relay
// can select one shard's messages: FNV-1a 32-bit of the key, masked to be
// non-negative in a signed 32-bit column.
func KeyHash(key []byte) int32 {
	h := fnv.New32a()
	h.Write(key)
	return int32(h.Sum32() & 0x7fffffff)
}

// Shard selects a subset of the outbox: the messages whose KeyHash % Count
// == Index. All messages of one key fall in one shard, so sharding keeps
// per-key order. The zero value (Count 0 or 1) is the whole outbox.
type Shard struct {
	Index int
	Count int
}

// Contains reports whether a key hash belongs to the shard.
func (s Shard) Contains(keyHash int32) bool {
	if s.Count <= 1 {
		return true
	}
	return int(keyHash)%s.Count == s.Index
}

// Valid reports whether the shard is well formed.
func (s Shard) Valid() bool {
	return s.Count <= 1 && s.Index == 0 || s.Count > 1 && s.Index >= 0 && s.Index < s.Count
}

// Backlog describes the unpublished messages of a shard.
type Backlog struct {
	Messages int64
	Oldest   time.Time // zero when empty
}

// Source is the relay's view of an outbox: the backends in the
// subpackages implement it.
type Source interface {
	// Fetch returns up to limit unpublished messages of the shard, lowest
	// ID first.
	Fetch(ctx context.Context, shard Shard, limit int) ([]Message, error)
	// Delete removes messages that the broker acknowledged.
	Delete(ctx context.Context, ids []int64) error
	// Backlog counts the shard's unpublished messages.
	Backlog(ctx context.Context, shard Shard) (Backlog, error)
	// Park sets a message aside that the broker refused for good (too
	// large, invalid topic): it is kept with the reason, never published
	// and no longer fetched, so it cannot block the rest of its shard.
	Park(ctx context.Context, id int64, reason string) error
}

// Locker grants exclusive ownership of a shard, so that exactly one relay
// replica publishes it at a time.
type Locker interface {
	// Lock blocks until the shard is owned or ctx ends. The returned lost
	// channel is closed if ownership is lost (for example the database
	// connection holding it dropped); release gives it up.
	Lock(ctx context.Context, shard Shard) (lost <-chan struct{}, release func(), err error)
}

// Waker tells a relay that new messages were committed, so it can fetch at
// once instead of waiting for its next poll. Notifications are hints:
// they may be coalesced or lost, and the relay polls as a fallback.
type Waker interface {
	// Wake returns a channel that receives after commits. It is closed
	// when ctx ends.
	Wake(ctx context.Context) (<-chan struct{}, error)
}

// ErrUnroutable reports an event whose topic is not a legal Kafka topic
// name; the save that carried it is refused.
var ErrUnroutable = errors.New("outbox: cannot route message")

// ErrNoOutbox reports an outbox operation on a store without one.
var ErrNoOutbox = errors.New("outbox: store has no outbox")
