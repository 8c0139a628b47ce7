package projection

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"time"
)

// ErrLeaseLost is matched (errors.Is) by the error of a transaction that
// tried to apply messages of a partition whose lease this runner no
// longer holds: another runner acquired it (a higher generation) while
// this one was paused, cut off or slow. The transaction rolled back; the
// runner drops the partition's messages and leaves it to its new owner.
var ErrLeaseLost = errors.New("projection: partition lease lost")

// lockNamespace is the first key of the two-key advisory locks members
// hold on PostgreSQL (the second is the member id): "esfp".
const lockNamespace = 0x65736670

// lease is this runner's hold on one partition: the generation it was
// acquired at, and the reader feeding the apply loop.
type lease struct {
	key   partitionKey
	gen   int64
	start int64 // offset the reader started at (kafka.FirstOffset: none stored)
	// cluster is the id of the Kafka cluster start was read from, as
	// stored with it ("": not known).
	cluster string
	// acquired is when the lease was taken; applied is set by the first
	// commit that applied a message of it (logged: a takeover's length).
	acquired time.Time
	applied  atomic.Bool
	// dropped is set once the lease is released or lost: the apply loop
	// skips the partition's messages from then on.
	dropped atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{} // the reader has stopped
}

// leaseRow is a partition's row in LeasesTable.
type leaseRow struct {
	key        partitionKey
	owner      int64 // 0: free
	generation int64
	nextOffset int64
	clusterID  string // the cluster nextOffset is of ("": not known)
}

// offsetRow is what an applying transaction writes to LeasesTable: the
// partition's next offset, under the condition that the lease is still
// held at gen.
type offsetRow struct {
	key     partitionKey
	gen     int64
	next    int64
	cluster string // the cluster the messages came from ("": not known)
}

// nowMillis is the database clock in Unix milliseconds: heartbeats and
// liveness are judged on one clock, whatever the hosts' clocks say.
func nowMillis(d Dialect) string {
	if d == Postgres {
		return `(extract(epoch from clock_timestamp()) * 1000)::bigint`
	}
	return `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
}

// memberLocker is implemented by databases whose sessions can hold a
// lock that outlives no process: PostgreSQL's advisory locks on a
// connection of their own. A member holding one is seen dead the moment
// its process dies (the session ends with its socket), without waiting
// for its heartbeat to go stale.
type memberLocker interface {
	// lockMember tries the lock of member of projection; ok false means
	// another session holds it.
	lockMember(ctx context.Context, projection string, member int64) (s memberSession, ok bool, err error)
}

// memberSession is a member's hold on its lock.
type memberSession struct {
	// lost is closed when the session is found broken (and by release).
	lost <-chan struct{}
	// wake receives when another member of the projection released
	// partitions or joined (nil: the database does not tell).
	wake <-chan struct{}
	// release ends the session, which frees the lock.
	release func()
}

// leaseChannel is the PostgreSQL notification channel on which members
// tell each other that partitions were released or a member joined, so
// that the others check the leases at once instead of at their next
// LeaseCheck: a rolling restart's hand-overs wait for no poll. The
// payload is leasePayload.
const leaseChannel = "esflow_projection_leases"

// leasePayload names the projection and the member that notified.
func leasePayload(projection string, member int64) string {
	return fmt.Sprintf("%s %d", projection, member)
}

// notifyLeases queues, in tx, the notification that wakes the other
// members (delivered when tx commits). SQLite has none: its members poll.
func (r *Runner) notifyLeases(ctx context.Context, tx Tx, member int64) error {
	if tx.Dialect() != Postgres {
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, leaseChannel, leasePayload(r.tracking, member))
	return err
}

// register makes this runner a member: a fresh random id, its advisory
// lock where the database has them, and its row in MembersTable (the
// others are told at once, so they hand its share over).
func (r *Runner) register(ctx context.Context) (member int64, s memberSession, err error) {
	locker, _ := r.db.(memberLocker)
	for range 10 {
		member = rand.Int64N(1<<31-2) + 1 // positive int4: the lock's second key
		s = memberSession{release: func() {}}
		if locker != nil {
			var ok bool
			s, ok, err = locker.lockMember(ctx, r.tracking, member)
			if err != nil {
				return 0, memberSession{}, fmt.Errorf("projection %s: member lock: %w", r.tracking, err)
			}
			if !ok {
				continue // a live member of some projection has this id
			}
		}
		if err = r.heartbeatTx(ctx, member, true); err != nil {
			s.release()
			return 0, memberSession{}, err
		}
		if s.lost == nil {
			s.lost = make(chan struct{}) // never closed: no session to lose
		}
		return member, s, nil
	}
	return 0, memberSession{}, fmt.Errorf("projection %s: no free member id after 10 tries", r.tracking)
}

// heartbeat records that member is alive. On PostgreSQL it commits
// without waiting for the WAL flush: a heartbeat lost in a crash costs
// nothing, and one every HeartbeatInterval per runner must not load the
// database's disk.
func (r *Runner) heartbeat(ctx context.Context, member int64) error {
	return r.heartbeatTx(ctx, member, false)
}

// heartbeatTx is heartbeat, notifying the other members with notify.
// On PostgreSQL a plain heartbeat is one statement outside a transaction
// (one round trip), its asynchronous commit set by the statement itself.
func (r *Runner) heartbeatTx(ctx context.Context, member int64, notify bool) error {
	const upsert = ` ON CONFLICT (projection, member) DO UPDATE SET seen_ms = excluded.seen_ms, host = excluded.host`
	run := r.single
	if notify {
		run = r.db.InTx // two statements
	}
	err := run(ctx, func(tx Tx) error {
		if tx.Dialect() == Postgres && !notify {
			_, err := tx.Exec(ctx, `WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO `+MembersTable+` (projection, member, host, seen_ms) SELECT $1, $2, $3, `+nowMillis(tx.Dialect())+` FROM async`+upsert,
				r.tracking, member, r.cfg.MemberName)
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+MembersTable+` (projection, member, host, seen_ms) VALUES ($1, $2, $3, `+nowMillis(tx.Dialect())+`)`+upsert,
			r.tracking, member, r.cfg.MemberName)
		if err != nil || !notify {
			return err
		}
		return r.notifyLeases(ctx, tx, member)
	})
	if err != nil {
		return fmt.Errorf("projection %s: heartbeat: %w", r.tracking, err)
	}
	return nil
}

// autocommitter is implemented by databases that can run a statement
// outside an explicit transaction, saving BEGIN and COMMIT round trips.
type autocommitter interface {
	autocommit(ctx context.Context, fn func(Tx) error) error
}

// warmer is implemented by databases whose connections are worth
// opening, and whose statements are worth preparing, before a runner
// takes partitions: warm runs fn on n connections at once, each in a
// transaction that is rolled back.
type warmer interface {
	warm(ctx context.Context, n int, fn func(Tx) error) error
}

// single runs fn outside a transaction where the database allows, in a
// transaction otherwise. fn must send one statement where the database
// allows it (it may send several where it does not: SQLite's fallbacks).
// The lease bookkeeping is one statement per step, so on PostgreSQL each
// step is one round trip: on a loaded machine a round trip is what a
// hand-over waits for.
func (r *Runner) single(ctx context.Context, fn func(Tx) error) error {
	if a, ok := r.db.(autocommitter); ok {
		return a.autocommit(ctx, fn)
	}
	return r.db.InTx(ctx, fn)
}

// readLeases returns the projection's lease rows and the members that
// are alive: heartbeat fresher than LeaseTTL and, on PostgreSQL, member
// lock held by some session. One snapshot of both.
func (r *Runner) readLeases(ctx context.Context) (map[partitionKey]leaseRow, map[int64]bool, error) {
	rowsOut := map[partitionKey]leaseRow{}
	alive := map[int64]bool{}
	err := r.single(ctx, func(tx Tx) error {
		live := `m.seen_ms > ` + nowMillis(tx.Dialect()) + ` - $2`
		args := []any{r.tracking, r.cfg.LeaseTTL.Milliseconds()}
		if tx.Dialect() == Postgres {
			// The member's advisory lock (lockMember): gone the moment its
			// session ends. pg_locks shows the two keys as classid and
			// objid, objsubid 2.
			live += ` AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.locktype = 'advisory' AND k.granted
	AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND k.classid = $3::bigint::oid AND k.objid = m.member::oid AND k.objsubid = 2)`
			args = append(args, int64(lockNamespace))
		}
		// One statement for both (one round trip less per check): the
		// live members as rows with an empty topic, then the leases.
		rows, err := tx.Query(ctx, `SELECT '' AS topic, 0 AS kafka_partition, m.member, 0 AS generation, 0 AS next_offset
FROM `+MembersTable+` m WHERE m.projection = $1 AND `+live+`
UNION ALL
SELECT topic, kafka_partition, COALESCE(owner, 0), generation, next_offset FROM `+LeasesTable+` WHERE projection = $1`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l leaseRow
			if err := rows.Scan(&l.key.topic, &l.key.partition, &l.owner, &l.generation, &l.nextOffset); err != nil {
				return err
			}
			if l.key.topic == "" {
				alive[l.owner] = true
				continue
			}
			rowsOut[l.key] = l
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("projection %s: read leases: %w", r.tracking, err)
	}
	return rowsOut, alive, nil
}

// ensureLeaseRows creates the rows of partitions seen on the broker for
// the first time.
func (r *Runner) ensureLeaseRows(ctx context.Context, keys []partitionKey) error {
	err := r.db.InTx(ctx, func(tx Tx) error {
		for _, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO `+LeasesTable+` (projection, topic, kafka_partition) VALUES ($1, $2, $3)
ON CONFLICT (projection, topic, kafka_partition) DO NOTHING`, r.tracking, k.topic, k.partition); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("projection %s: create lease rows: %w", r.tracking, err)
	}
	return nil
}

// acquire takes partitions whose leases are free or held by dead
// members, each only if its row is still at the generation observed:
// compare and swap, so of two runners racing for one, one wins. It
// returns the rows won, with their new generation and stored next
// offset. On PostgreSQL it is one statement outside a transaction (one
// round trip: a failover takes every partition of the dead member at
// once), and it skips a row another transaction holds locked, such as
// the commit in flight of an owner that was paused inside it: that row
// is tried again at the next check (the caller checks again soon when
// it got fewer rows than it asked for).
func (r *Runner) acquire(ctx context.Context, member int64, rows []leaseRow) ([]leaseRow, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	var got []leaseRow
	err := r.single(ctx, func(tx Tx) error {
		got = got[:0]
		if tx.Dialect() == Postgres {
			topics, parts, gens := make([]string, len(rows)), make([]int32, len(rows)), make([]int64, len(rows))
			for i, l := range rows {
				topics[i], parts[i], gens[i] = l.key.topic, int32(l.key.partition), l.generation
			}
			// FOR UPDATE re-checks the generation of a row that changed
			// after the snapshot (READ COMMITTED), so the swap holds.
			res, err := tx.Query(ctx, `WITH won AS (
	SELECT l.topic, l.kafka_partition FROM `+LeasesTable+` l
	JOIN unnest($3::text[], $4::int[], $5::bigint[]) AS v(topic, part, gen)
		ON l.topic = v.topic AND l.kafka_partition = v.part AND l.generation = v.gen
	WHERE l.projection = $2
	FOR UPDATE OF l SKIP LOCKED
)
UPDATE `+LeasesTable+` l SET owner = $1, generation = l.generation + 1
FROM won WHERE l.projection = $2 AND l.topic = won.topic AND l.kafka_partition = won.kafka_partition
RETURNING l.topic, l.kafka_partition, l.generation, l.next_offset, l.cluster_id`, member, r.tracking, topics, parts, gens)
			if err != nil {
				return err
			}
			defer res.Close()
			for res.Next() {
				l := leaseRow{owner: member}
				if err := res.Scan(&l.key.topic, &l.key.partition, &l.generation, &l.nextOffset, &l.clusterID); err != nil {
					return err
				}
				got = append(got, l)
			}
			return res.Err()
		}
		for _, row := range rows {
			l := leaseRow{key: row.key, owner: member}
			err := tx.QueryRow(ctx, `UPDATE `+LeasesTable+` SET owner = $1, generation = generation + 1
WHERE projection = $2 AND topic = $3 AND kafka_partition = $4 AND generation = $5
RETURNING generation, next_offset, cluster_id`, member, r.tracking, row.key.topic, row.key.partition, row.generation).Scan(&l.generation, &l.nextOffset, &l.clusterID)
			if isNoRows(err) {
				continue
			}
			if err != nil {
				return err
			}
			got = append(got, l)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("projection %s: acquire partitions: %w", r.tracking, err)
	}
	return got, nil
}

// releaseLeases frees the listed leases (owner NULL, generation kept) if
// this member still holds them at their generation, and with gone also
// deletes the member's row: a replica shutting down hands everything
// over in one transaction.
func (r *Runner) releaseLeases(ctx context.Context, member int64, ls []*lease, gone bool) error {
	err := r.single(ctx, func(tx Tx) error {
		if tx.Dialect() == Postgres {
			// One statement outside a transaction (one round trip): the
			// releases, the member's row, and the notification that wakes
			// the others, sent when it commits.
			topics, parts, gens := make([]string, len(ls)), make([]int32, len(ls)), make([]int64, len(ls))
			for i, l := range ls {
				topics[i], parts[i], gens[i] = l.key.topic, int32(l.key.partition), l.gen
			}
			_, err := tx.Exec(ctx, `WITH released AS (
	UPDATE `+LeasesTable+` l SET owner = NULL
	FROM unnest($3::text[], $4::int[], $5::bigint[]) AS v(topic, part, gen)
	WHERE l.projection = $1 AND l.topic = v.topic AND l.kafka_partition = v.part AND l.owner = $2 AND l.generation = v.gen
	RETURNING 1
), gone AS (
	DELETE FROM `+MembersTable+` WHERE $6 AND projection = $1 AND member = $2 RETURNING 1
)
SELECT pg_notify($7, $8)`, r.tracking, member, topics, parts, gens, gone, leaseChannel, leasePayload(r.tracking, member))
			return err
		}
		for _, l := range ls {
			if _, err := tx.Exec(ctx, `UPDATE `+LeasesTable+` SET owner = NULL
WHERE projection = $1 AND topic = $2 AND kafka_partition = $3 AND owner = $4 AND generation = $5`,
				r.tracking, l.key.topic, l.key.partition, member, l.gen); err != nil {
				return err
			}
		}
		if gone {
			if _, err := tx.Exec(ctx, `DELETE FROM `+MembersTable+` WHERE projection = $1 AND member = $2`, r.tracking, member); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("projection %s: release leases: %w", r.tracking, err)
	}
	return nil
}

// assign spreads the partitions over the live members, topic by topic,
// and moves as few as it can: each member's quota of a topic is its
// partition count divided by the number of members (the remainder going
// to members in id order, rotated per topic), a partition stays with its
// owner while the owner is alive and within its quota, and the others
// (free, a dead member's, an owner's beyond its quota) go to the members
// below their quota, in id order. A member that joins therefore takes
// only its share, from the members above their new quota, and one that
// leaves gives only its own partitions away: a surge roll (a replica
// joins before the old one leaves) moves each partition at most once per
// step, where dealing the partitions round robin moved most of them at
// every change of membership. Every runner computes the same from the
// same rows, so no coordinator is needed; a runner whose view is
// momentarily different only delays a hand-over until the next check
// (the acquisition's compare-and-swap keeps two from both taking one).
func assign(rows map[partitionKey]leaseRow, members []int64) map[partitionKey]int64 {
	out := make(map[partitionKey]int64, len(rows))
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	index := make(map[int64]int, len(ms))
	for i, m := range ms {
		index[m] = i
	}
	byTopic := map[string][]partitionKey{}
	for k := range rows {
		byTopic[k.topic] = append(byTopic[k.topic], k)
	}
	topics := make([]string, 0, len(byTopic))
	for t := range byTopic {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	for t, topic := range topics {
		ps := byTopic[topic]
		sortKeys(ps)
		quota := make([]int, len(ms))
		for i := range ms {
			quota[i] = len(ps) / len(ms)
			if (i-t%len(ms)+len(ms))%len(ms) < len(ps)%len(ms) {
				quota[i]++
			}
		}
		var rest []partitionKey
		for _, k := range ps {
			if i, ok := index[rows[k].owner]; ok && quota[i] > 0 {
				out[k] = ms[i]
				quota[i]--
				continue
			}
			rest = append(rest, k)
		}
		i := 0
		for _, k := range rest {
			for quota[i] == 0 {
				i = (i + 1) % len(ms)
			}
			out[k] = ms[i]
			quota[i]--
		}
	}
	return out
}

func sortKeys(ks []partitionKey) {
	sort.Slice(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		return a.topic < b.topic || a.topic == b.topic && a.partition < b.partition
	})
}

// discoverPartitions lists the partitions of the projection's topics on
// the broker. Topics that do not exist yet are left out (the relay may
// create them later; discovery runs again).
func (r *Runner) discoverPartitions(ctx context.Context) ([]partitionKey, error) {
	var out []partitionKey
	var errs []error
	for _, topic := range r.p.Topics() {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		parts, err := r.dialer().LookupPartitions(dctx, "tcp", r.cfg.Brokers[rand.IntN(len(r.cfg.Brokers))], topic)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("partitions of %s: %w", topic, err))
			continue
		}
		for _, p := range parts {
			out = append(out, partitionKey{topic, p.ID})
		}
	}
	sortKeys(out)
	return out, errors.Join(errs...)
}

// forgetMembers deletes the rows of members silent for 30 LeaseTTLs
// (killed replicas leave theirs behind). A member that comes back after
// that (a very long pause) writes its row again with its next heartbeat.
func (r *Runner) forgetMembers(ctx context.Context) error {
	return r.db.InTx(ctx, func(tx Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM `+MembersTable+` WHERE projection = $1 AND seen_ms < `+nowMillis(tx.Dialect())+` - $2`,
			r.tracking, 30*r.cfg.LeaseTTL.Milliseconds())
		return err
	})
}
