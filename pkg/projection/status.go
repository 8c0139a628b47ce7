package projection

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
)

// PartitionLag is the position of one assigned partition.
type PartitionLag struct {
	Topic     string
	Partition int
	// Offset is the next offset to apply (last applied + 1).
	Offset int64
	// HighWaterMark is the partition's end as of the last fetch.
	HighWaterMark int64
	// Lag is HighWaterMark - Offset: messages not applied yet.
	Lag int64
}

// Status is a snapshot of a runner's progress.
type Status struct {
	Running    bool
	Partitions []PartitionLag
	// LastEventAge is now minus the timestamp of the newest applied event
	// (zero before the first one).
	LastEventAge time.Duration
	// LastFetch is when the last message was fetched.
	LastFetch time.Time
	// Pending counts messages fetched and not yet applied.
	Pending int
	// Counters since the runner was created.
	Applied, Duplicates, Gaps, DeadLettered uint64
	// OpenGaps counts aggregates whose held-back events have not been
	// applied yet (as far as this process knows; see UnresolvedGaps).
	OpenGaps int
	// Leases counts the partitions this runner holds (see DESIGN.md,
	// "Partition leases"); Partitions lists those it has applied from.
	Leases int
	Ready  bool
}

// Status returns the runner's progress.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{
		Running: r.running.Load(), LastFetch: r.lastFetch, Pending: r.pending,
		Applied: r.counts.applied, Duplicates: r.counts.duplicates, Gaps: r.counts.gaps,
		DeadLettered: r.counts.deadLettered, OpenGaps: len(r.openGaps), Leases: r.owned,
	}
	if !r.lastEvent.IsZero() {
		s.LastEventAge = time.Since(r.lastEvent)
	}
	for _, p := range r.partitions {
		s.Partitions = append(s.Partitions, *p)
	}
	sort.Slice(s.Partitions, func(i, j int) bool {
		a, b := s.Partitions[i], s.Partitions[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	s.Ready = r.readyLocked()
	return s
}

// Ready reports whether the runner is running as a member of its
// projection (it has read the partition leases), caught up and has no
// open gap, and its readers are healthy (neither failing to fetch nor to
// check leases since they last succeeded). Caught up means nothing
// fetched is waiting and every partition it holds and has read is at its
// high watermark, or nothing arrived for IdleAfter (the high watermark is
// only as fresh as the last fetch). A member that holds no partition
// (more replicas than partitions) is ready: it is the standby.
func (r *Runner) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readyLocked()
}

func (r *Runner) readyLocked() bool {
	if !r.running.Load() || r.started.IsZero() || !r.leasesChecked || r.leaseFailing || len(r.openGaps) > 0 || !r.readerTrouble.IsZero() {
		return false
	}
	last := r.lastFetch
	if last.IsZero() {
		last = r.started
	}
	if r.pending == 0 && time.Since(last) >= r.cfg.IdleAfter {
		return true
	}
	if r.pending > 0 || len(r.partitions) == 0 {
		return false
	}
	for _, p := range r.partitions {
		if p.Lag > 0 {
			return false
		}
	}
	return true
}

// UnresolvedGaps lists, from the database, the aggregates with events
// held back because an earlier version is missing. Unlike Status it also
// sees gaps recorded by other instances of the projection.
func (r *Runner) UnresolvedGaps(ctx context.Context) ([]Gap, error) {
	return unresolvedGaps(ctx, r.db, r.tracking)
}

// DeadLetters lists the projection's dead-lettered events (with
// redriven ones when all is true).
func (r *Runner) DeadLetters(ctx context.Context, all bool) ([]DeadLetter, error) {
	return deadLetters(ctx, r.db, r.tracking, all)
}

// deadLetters lists a projection's dead letters (with redriven ones when
// all is true).
func deadLetters(ctx context.Context, db DB, projection string, all bool) ([]DeadLetter, error) {
	var out []DeadLetter
	q := `SELECT event_id, aggregate_id, version, error, topic, kafka_partition, kafka_offset, redriven_at IS NOT NULL
FROM ` + DeadLettersTable + ` WHERE projection = $1`
	if !all {
		q += ` AND redriven_at IS NULL`
	}
	err := db.InTx(ctx, func(tx Tx) error {
		rows, err := tx.Query(ctx, q+` ORDER BY dead_lettered_at, event_id`, projection)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d DeadLetter
			var v int64
			if err := rows.Scan(&d.EventID, &d.AggregateID, &v, &d.Error, &d.Topic, &d.Partition, &d.Offset, &d.Redriven); err != nil {
				return err
			}
			d.Version = uint64(v)
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("projection: read dead letters: %w", err)
	}
	return out, nil
}

// AppliedVersion returns the last applied version of an aggregate, and
// false when none is.
func (r *Runner) AppliedVersion(ctx context.Context, aggregateID uuid.UUID) (uint64, bool, error) {
	var v int64
	found := true
	err := r.db.InTx(ctx, func(tx Tx) error {
		err := tx.QueryRow(ctx, `SELECT version FROM `+TrackingTable+` WHERE projection = $1 AND aggregate_id = $2`,
			r.tracking, aggregateID.String()).Scan(&v)
		if isNoRows(err) {
			found = false
			return nil
		}
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("projection: read tracking of %s: %w", aggregateID, err)
	}
	return uint64(v), found, nil
}

func isNoRows(err error) bool { return errors.Is(err, ErrNoRows) }

// WaitFor returns when the read model includes version of the aggregate
// (read-your-writes after a command), or with ctx's error. It wakes on
// this runner's commits and polls every 50ms for other instances'.
func (r *Runner) WaitFor(ctx context.Context, aggregateID uuid.UUID, version uint64) error {
	for {
		r.mu.Lock()
		ch := r.notify
		r.mu.Unlock()
		v, ok, err := r.AppliedVersion(ctx, aggregateID)
		if err != nil {
			return err
		}
		if ok && v >= version {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("projection: wait for %s v%d: %w", aggregateID, version, ctx.Err())
		}
		t.Stop()
	}
}
