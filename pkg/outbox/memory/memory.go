package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/esflow/esflow/pkg/eventstore"
	evmemory "github.com/esflow/esflow/pkg/eventstore/memory"
	"github.com/esflow/esflow/pkg/outbox"
)

// Config configures an [Outbox]. The zero value is ready to use; it exists
// for symmetry with the SQL backends.
type Config struct {
	// Now returns the time stamped on new messages; nil means time.Now.
	Now func() time.Time
}

// delegated is the part of the event store's API that Outbox serves by
// delegating to it. Embedding the store itself would also promote its
// Close and Migrate, which mean something else on the outbox.
type delegated interface {
	eventstore.Recorder
	eventstore.SnapshotRecorder
}

// Outbox is an in-memory transactional outbox over a memory event store.
// It is safe for concurrent use. Create one with [New].
type Outbox struct {
	events *evmemory.Store
	// delegated is events: the outbox is an eventstore.Recorder and
	// SnapshotRecorder through it (Append, ReadStream, ReadNotifications,
	// MaxNotificationID, SaveSnapshot, LatestSnapshot).
	delegated
	now func() time.Time

	mu     sync.Mutex
	nextID int64
	rows   []row // ascending id

	locksMu sync.Mutex
	locks   map[outbox.Shard]chan struct{}

	subsMu sync.Mutex
	subs   map[chan struct{}]struct{}
}

type row struct {
	msg      outbox.Message
	keyHash  int32
	parked   bool
	reason   string
	parkedAt time.Time
}

var (
	_ eventstore.OutboxRecorder = (*Outbox)(nil)
	_ outbox.Source             = (*Outbox)(nil)
	_ outbox.Locker             = (*Outbox)(nil)
	_ outbox.Waker              = (*Outbox)(nil)
)

// New returns an empty outbox over events.
func New(events *evmemory.Store, cfg Config) (*Outbox, error) {
	if events == nil {
		return nil, errors.New("outbox/memory: nil event store")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Outbox{
		events: events, delegated: events,
		now:   now,
		locks: map[outbox.Shard]chan struct{}{},
		subs:  map[chan struct{}]struct{}{},
	}, nil
}

// Events returns the wrapped event store.
func (o *Outbox) Events() *evmemory.Store { return o.events }

// AppendWithOutbox implements [eventstore.OutboxRecorder]: the records
// and the messages are stored together or not at all. A message without a
// topic is refused with an error matching [outbox.ErrUnroutable].
func (o *Outbox) AppendWithOutbox(ctx context.Context, records []eventstore.Record, msgs []outbox.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox/memory: append: %w", err)
	}
	if err := eventstore.ValidateBatch(records); err != nil {
		return err
	}
	for i, m := range msgs {
		if m.Topic == "" {
			return fmt.Errorf("%w: message %d has no topic", outbox.ErrUnroutable, i)
		}
	}
	if len(records) == 0 && len(msgs) == 0 {
		return nil
	}
	o.mu.Lock()
	if len(records) > 0 {
		// The memory store's append is all-or-nothing; messages follow
		// only when it succeeded.
		if err := o.events.Append(ctx, records); err != nil {
			o.mu.Unlock()
			return err
		}
	}
	now := o.now()
	for _, m := range msgs {
		o.nextID++
		c := outbox.Message{
			ID: o.nextID, Topic: m.Topic, Key: slices.Clone(m.Key), Value: slices.Clone(m.Value),
			CreatedAt: now,
		}
		for _, h := range m.Headers {
			c.Headers = append(c.Headers, outbox.Header{Key: h.Key, Value: slices.Clone(h.Value)})
		}
		o.rows = append(o.rows, row{msg: c, keyHash: outbox.KeyHash(m.Key)})
	}
	o.mu.Unlock()
	if len(msgs) > 0 {
		o.signal()
	}
	return nil
}

func checkShard(shard outbox.Shard) error {
	if !shard.Valid() {
		return fmt.Errorf("outbox/memory: invalid shard %d/%d", shard.Index, shard.Count)
	}
	return nil
}

func cloneMessage(m outbox.Message) outbox.Message {
	m.Key = slices.Clone(m.Key)
	m.Value = slices.Clone(m.Value)
	m.Headers = slices.Clone(m.Headers)
	for i := range m.Headers {
		m.Headers[i].Value = slices.Clone(m.Headers[i].Value)
	}
	return m
}

// Fetch implements [outbox.Source].
func (o *Outbox) Fetch(ctx context.Context, shard outbox.Shard, limit int) ([]outbox.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbox/memory: fetch: %w", err)
	}
	if err := checkShard(shard); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("outbox/memory: fetch: limit %d must be positive", limit)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []outbox.Message
	for _, r := range o.rows {
		if len(out) == limit {
			break
		}
		if !r.parked && shard.Contains(r.keyHash) {
			out = append(out, cloneMessage(r.msg))
		}
	}
	return out, nil
}

// Delete implements [outbox.Source]. Unknown ids are ignored.
func (o *Outbox) Delete(ctx context.Context, ids []int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox/memory: delete: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	drop := make(map[int64]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rows = slices.DeleteFunc(o.rows, func(r row) bool { return drop[r.msg.ID] })
	return nil
}

// Backlog implements [outbox.Source]. Parked messages are not counted
// (see [Outbox.Parked]).
func (o *Outbox) Backlog(ctx context.Context, shard outbox.Shard) (outbox.Backlog, error) {
	if err := ctx.Err(); err != nil {
		return outbox.Backlog{}, fmt.Errorf("outbox/memory: backlog: %w", err)
	}
	if err := checkShard(shard); err != nil {
		return outbox.Backlog{}, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var b outbox.Backlog
	for _, r := range o.rows {
		if r.parked || !shard.Contains(r.keyHash) {
			continue
		}
		if b.Messages == 0 || r.msg.CreatedAt.Before(b.Oldest) {
			b.Oldest = r.msg.CreatedAt
		}
		b.Messages++
	}
	return b, nil
}

// Parked counts the shard's parked messages.
func (o *Outbox) Parked(ctx context.Context, shard outbox.Shard) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("outbox/memory: parked: %w", err)
	}
	if err := checkShard(shard); err != nil {
		return 0, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var n int64
	for _, r := range o.rows {
		if r.parked && shard.Contains(r.keyHash) {
			n++
		}
	}
	return n, nil
}

// Park implements [outbox.Source]. Parking an unknown id fails with an
// error matching [eventstore.ErrNotFound].
func (o *Outbox) Park(ctx context.Context, id int64, reason string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox/memory: park: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	i, ok := slices.BinarySearchFunc(o.rows, id, func(r row, id int64) int {
		switch {
		case r.msg.ID < id:
			return -1
		case r.msg.ID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return fmt.Errorf("outbox/memory: park message %d: %w", id, eventstore.ErrNotFound)
	}
	o.rows[i].parked = true
	o.rows[i].reason = reason
	o.rows[i].parkedAt = o.now()
	return nil
}

// Lock implements [outbox.Locker] with one semaphore per shard of this
// Outbox. lost is closed only by release (nothing else can take the lock
// away in memory).
func (o *Outbox) Lock(ctx context.Context, shard outbox.Shard) (<-chan struct{}, func(), error) {
	if err := checkShard(shard); err != nil {
		return nil, nil, err
	}
	if shard.Count <= 1 {
		shard = outbox.Shard{}
	}
	o.locksMu.Lock()
	sem, ok := o.locks[shard]
	if !ok {
		sem = make(chan struct{}, 1)
		o.locks[shard] = sem
	}
	o.locksMu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("outbox/memory: lock shard %d/%d: %w", shard.Index, shard.Count, ctx.Err())
	}
	lost := make(chan struct{})
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(lost)
			<-sem
		})
	}
	return lost, release, nil
}

// Wake implements [outbox.Waker]: the channel receives after each
// committed append that wrote messages through this Outbox.
func (o *Outbox) Wake(ctx context.Context) (<-chan struct{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbox/memory: wake: %w", err)
	}
	sub := make(chan struct{}, 1)
	out := make(chan struct{}, 1)
	o.subsMu.Lock()
	o.subs[sub] = struct{}{}
	o.subsMu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			o.subsMu.Lock()
			delete(o.subs, sub)
			o.subsMu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-sub:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}

// signal wakes every Wake channel without blocking.
func (o *Outbox) signal() {
	o.subsMu.Lock()
	defer o.subsMu.Unlock()
	for sub := range o.subs {
		select {
		case sub <- struct{}{}:
		default:
		}
	}
}
