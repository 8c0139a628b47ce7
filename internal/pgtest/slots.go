package pgtest

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// dropSlots drops the replication slots of database db, ending the
// walsenders that use them first. An active slot is released a moment
// after its walsender was told to exit, so the drop is retried.
func dropSlots(ctx context.Context, admin *pgxpool.Pool, db string) error {
	var err error
	for range 50 {
		if _, err = admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
WHERE database = $1 AND active_pid IS NOT NULL`, db); err != nil {
			return fmt.Errorf("terminate walsenders: %w", err)
		}
		if _, err = admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
WHERE database = $1`, db); err == nil {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("drop slots: %w", err)
}
