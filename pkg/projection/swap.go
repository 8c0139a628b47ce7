package projection

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// resetShadow drops what an interrupted rebuild with the same suffix
// left: its tables and its bookkeeping rows.
func resetShadow(ctx context.Context, db DB, p Projection, suffix string) error {
	shadow := p.Name() + suffix
	return db.InTx(ctx, func(tx Tx) error {
		for _, t := range p.Tables() {
			if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+QuoteIdentifier(t+suffix)); err != nil {
				return fmt.Errorf("projection %s: rebuild: drop shadow table: %w", p.Name(), err)
			}
		}
		for _, table := range []string{TrackingTable, GapsTable, DeadLettersTable} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE projection = $1`, shadow); err != nil {
				return fmt.Errorf("projection %s: rebuild: clear %s: %w", p.Name(), table, err)
			}
		}
		return nil
	})
}

// swap is the swap transaction. In order: lock, so that no live
// transaction commits until this one does; apply what arrived since the
// catch-up (the feed's new mark); check that the shadow covers the live
// tracking; rename the tables and move the bookkeeping rows. Items taken
// from the feed go back to it when the transaction does not commit.
func swap(ctx context.Context, db DB, shadow *Runner, live Tables, f feed, cfg RebuildConfig) error {
	liveName, shadowName := shadow.p.Name(), shadow.tracking
	var (
		taken   []item
		results []applyResult
	)
	// Readers of the live tables wait while the locks are held: bound the
	// reading of the source in the transaction (a stalled broker or store
	// rolls the attempt back instead).
	rctx, cancel := context.WithTimeout(ctx, cfg.SwapReadTimeout)
	defer cancel()
	err := db.InTx(ctx, func(tx Tx) error {
		if err := lockForSwap(ctx, tx, shadow, cfg); err != nil {
			return err
		}
		if err := f.mark(rctx); err != nil {
			return err
		}
		for {
			items, err := f.next(rctx, shadow.cfg.BatchSize)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				break
			}
			taken = append(taken, items...)
			events := make([]Event, len(items))
			for i, it := range items {
				if it.bad != nil {
					return fmt.Errorf("%w: %w", errSwapRetry, it.bad)
				}
				events[i] = it.e
			}
			res, err := shadow.applyIn(ctx, tx, events, false, nil)
			if err != nil {
				if errors.As(err, new(*handlerError)) {
					return fmt.Errorf("%w: %w", errSwapRetry, err)
				}
				return err
			}
			results = append(results, res)
		}
		var behind int64
		err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+TrackingTable+` l WHERE l.projection = $1 AND NOT EXISTS (
	SELECT 1 FROM `+TrackingTable+` s WHERE s.projection = $2 AND s.aggregate_id = l.aggregate_id AND s.version >= l.version)`,
			liveName, shadowName).Scan(&behind)
		if err != nil {
			return fmt.Errorf("projection: compare tracking: %w", err)
		}
		if behind > 0 {
			return fmt.Errorf("%w: %d aggregates have later versions applied live than rebuilt", ErrRebuildBehind, behind)
		}
		if err := swapTables(ctx, tx, shadow.p, live, shadow.tables, cfg.Suffix, cfg.KeepOld); err != nil {
			return err
		}
		return moveBookkeeping(ctx, tx, liveName, shadowName)
	})
	if err != nil {
		f.unread(taken)
		return err
	}
	for _, res := range results {
		shadow.committed(ctx, res)
	}
	return nil
}

// lockForSwap takes the locks that keep live transactions out until the
// swap commits. PostgreSQL: the live and shadow tables in ACCESS
// EXCLUSIVE mode (waits for live transactions that wrote them, blocks
// new ones and the readers), then the tracking table in SHARE ROW
// EXCLUSIVE mode (waits for in-flight tracking writers such as a
// dead-letter transaction, which touches no read-model table, and blocks
// new ones; plain reads go on). Tables first: a live transaction writes
// its tables before its tracking, so it never waits for tracking while
// holding a table this transaction waits for. SQLite: a write statement
// takes the database's single write lock.
func lockForSwap(ctx context.Context, tx Tx, shadow *Runner, cfg RebuildConfig) error {
	if tx.Dialect() != Postgres {
		if _, err := tx.Exec(ctx, `UPDATE `+TrackingTable+` SET version = version WHERE 1 = 0`); err != nil {
			return fmt.Errorf("projection: rebuild: lock: %w", err)
		}
		return nil
	}
	ms := fmt.Sprintf("%dms", max(cfg.LockTimeout.Milliseconds(), 1))
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, ms); err != nil {
		return fmt.Errorf("projection: rebuild: set lock timeout: %w", err)
	}
	names := make([]string, 0, 2*len(shadow.p.Tables()))
	for _, t := range shadow.p.Tables() {
		names = append(names, QuoteIdentifier(t), QuoteIdentifier(t+cfg.Suffix))
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("projection: rebuild: lock tables: %w", err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE `+TrackingTable+` IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("projection: rebuild: lock tracking: %w", err)
	}
	return nil
}

// swapTables drops (or keeps as _old) the live tables and renames the
// shadow tables to the live names.
func swapTables(ctx context.Context, tx Tx, p Projection, live, shadow Tables, suffix string, keepOld bool) error {
	for _, t := range p.Tables() {
		if keepOld {
			old := QuoteIdentifier(t + "_old")
			if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+old); err != nil {
				return fmt.Errorf("projection: rebuild: drop %s: %w", old, err)
			}
			if _, err := tx.Exec(ctx, `ALTER TABLE `+live.Name(t)+` RENAME TO `+old); err != nil {
				return fmt.Errorf("projection: rebuild: keep %s: %w", live.Name(t), err)
			}
		} else if _, err := tx.Exec(ctx, `DROP TABLE `+live.Name(t)); err != nil {
			return fmt.Errorf("projection: rebuild: drop %s: %w", live.Name(t), err)
		}
		if _, err := tx.Exec(ctx, `ALTER TABLE `+shadow.Name(t)+` RENAME TO `+live.Name(t)); err != nil {
			return fmt.Errorf("projection: rebuild: rename %s: %w", shadow.Name(t), err)
		}
	}
	return nil
}

// moveBookkeeping replaces the live projection's tracking and dead
// letters by the shadow's, and merges the gap rows: the shadow's win,
// live ones still beyond the new tracking stay (the live runner held
// those events back and waits for the relay to re-send them), resolved
// ones go.
func moveBookkeeping(ctx context.Context, tx Tx, live, shadow string) error {
	both, one := []any{live, shadow}, []any{live}
	stmts := []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM ` + TrackingTable + ` WHERE projection = $1`, one},
		{`UPDATE ` + TrackingTable + ` SET projection = $1 WHERE projection = $2`, both},
		{`INSERT INTO ` + GapsTable + ` (projection, aggregate_id, expected_version, seen_version, event_id, topic,
	kafka_partition, kafka_offset, detected_at)
SELECT CAST($1 AS TEXT), aggregate_id, expected_version, seen_version, event_id, topic, kafka_partition, kafka_offset, detected_at
FROM ` + GapsTable + ` WHERE projection = $2
ON CONFLICT (projection, aggregate_id) DO UPDATE SET expected_version = excluded.expected_version,
	seen_version = excluded.seen_version, event_id = excluded.event_id, topic = excluded.topic,
	kafka_partition = excluded.kafka_partition, kafka_offset = excluded.kafka_offset, detected_at = excluded.detected_at`, both},
		{`DELETE FROM ` + GapsTable + ` WHERE projection = $1`, []any{shadow}},
		{`DELETE FROM ` + GapsTable + ` WHERE projection = $1 AND seen_version <= COALESCE((SELECT t.version FROM ` +
			TrackingTable + ` t WHERE t.projection = $1 AND t.aggregate_id = ` + GapsTable + `.aggregate_id), -1)`, one},
		{`DELETE FROM ` + DeadLettersTable + ` WHERE projection = $1`, one},
		{`UPDATE ` + DeadLettersTable + ` SET projection = $1 WHERE projection = $2`, both},
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("projection: rebuild: move bookkeeping rows: %w", err)
		}
	}
	return nil
}
