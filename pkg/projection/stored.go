package projection

import (
	"context"
	"fmt"
	"time"
)

// StoredStatus is a projection's state as its database holds it: what an
// operator's tool sees without running a runner (Runner.Status is the
// live view of one process).
type StoredStatus struct {
	Projection string
	// Members are the runners registered for the projection, with how
	// long ago each last sent a heartbeat (on the database's clock).
	Members []Member
	// Partitions are the lease rows, one per partition of the topics.
	Partitions []PartitionLease
	// Tracked counts the aggregates the read model has applied events of.
	Tracked int
	// Gaps are the unresolved gaps (see Runner.UnresolvedGaps).
	Gaps []Gap
	// DeadLetters are the dead letters not yet redriven.
	DeadLetters []DeadLetter
}

// Member is a registered runner of a projection.
type Member struct {
	ID      int64
	Host    string
	SeenAgo time.Duration
}

// PartitionLease is a partition's lease row.
type PartitionLease struct {
	Topic     string
	Partition int
	// Owner is the member applying it, 0 when free.
	Owner      int64
	Generation int64
	// NextOffset is the next offset to apply (-1: nothing applied through
	// a lease yet).
	NextOffset int64
	// Cluster is the id of the Kafka cluster NextOffset is a position in
	// ("": not known). A runner that finds another cluster reads the
	// partition from its first offset.
	Cluster string
}

// ReadStatus reads the stored state of the projection named projection
// (its tracking key: the name, plus a table suffix if one is used) from
// db's bookkeeping tables.
func ReadStatus(ctx context.Context, db DB, projection string) (StoredStatus, error) {
	st := StoredStatus{Projection: projection}
	fail := func(what string, err error) (StoredStatus, error) {
		return StoredStatus{}, fmt.Errorf("projection %s: read %s: %w", projection, what, err)
	}
	err := db.InTx(ctx, func(tx Tx) error {
		rows, err := tx.Query(ctx, `SELECT member, host, `+nowMillis(tx.Dialect())+` - seen_ms FROM `+MembersTable+`
WHERE projection = $1 ORDER BY member`, projection)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Member
			var ago int64
			if err := rows.Scan(&m.ID, &m.Host, &ago); err != nil {
				return err
			}
			m.SeenAgo = time.Duration(ago) * time.Millisecond
			st.Members = append(st.Members, m)
		}
		return rows.Err()
	})
	if err != nil {
		return fail("members", err)
	}
	err = db.InTx(ctx, func(tx Tx) error {
		rows, err := tx.Query(ctx, `SELECT topic, kafka_partition, COALESCE(owner, 0), generation, next_offset, cluster_id FROM `+LeasesTable+`
WHERE projection = $1 ORDER BY topic, kafka_partition`, projection)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l PartitionLease
			if err := rows.Scan(&l.Topic, &l.Partition, &l.Owner, &l.Generation, &l.NextOffset, &l.Cluster); err != nil {
				return err
			}
			st.Partitions = append(st.Partitions, l)
		}
		rows.Close() // before the next statement: a PostgreSQL Tx runs one at a time
		if err := rows.Err(); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+TrackingTable+` WHERE projection = $1`, projection).Scan(&st.Tracked)
	})
	if err != nil {
		return fail("leases and tracking", err)
	}
	if st.Gaps, err = unresolvedGaps(ctx, db, projection); err != nil {
		return StoredStatus{}, err
	}
	if st.DeadLetters, err = deadLetters(ctx, db, projection, false); err != nil {
		return StoredStatus{}, err
	}
	return st, nil
}
