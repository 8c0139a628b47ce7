package projection_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/projection"
)

// counts is the tests' sample projection: events per aggregate type, and
// every aggregate with its last version. It writes a whole batch with two
// multi-row upserts (BatchHandler); perEvent hides that to exercise Handle.
type counts struct {
	name string

	mu     sync.Mutex
	failOn map[uuid.UUID]bool // events whose handling fails
}

func newCounts(name string) *counts { return &counts{name: name, failOn: map[uuid.UUID]bool{}} }

func (c *counts) Name() string     { return c.name }
func (c *counts) Topics() []string { return []string{"esflow.World"} }
func (c *counts) Tables() []string { return []string{"event_counts", "aggregates"} }

func (c *counts) fail(id uuid.UUID, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failOn[id] = on
}

func (c *counts) Setup(ctx context.Context, tx projection.Tx, t projection.Tables) error {
	for _, s := range []string{
		`CREATE TABLE IF NOT EXISTS ` + t.Name("event_counts") + ` (aggregate_type TEXT PRIMARY KEY, events BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + t.Name("aggregates") + ` (aggregate_id TEXT PRIMARY KEY, aggregate_type TEXT NOT NULL,
			last_version BIGINT NOT NULL, last_event_type TEXT NOT NULL)`,
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

func (c *counts) Handle(ctx context.Context, tx projection.Tx, t projection.Tables, e projection.Event) error {
	return c.HandleBatch(ctx, tx, t, []projection.Event{e})
}

func (c *counts) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	c.mu.Lock()
	for _, e := range events {
		if c.failOn[e.EventID] {
			c.mu.Unlock()
			return fmt.Errorf("refusing event %s: %w", e.EventID, errPoison)
		}
	}
	c.mu.Unlock()
	perType := map[string]int64{}
	type agg struct {
		typ, eventType string
		version        uint64
	}
	last := map[string]agg{}
	for _, e := range events {
		var p struct {
			What string `json:"what"`
		}
		if e.EventType == "SomethingHappened" {
			if err := e.Decode(&p); err != nil {
				return err
			}
		}
		perType[e.AggregateType]++
		id := e.AggregateID.String()
		if a, ok := last[id]; !ok || e.AggregateVersion > a.version {
			last[id] = agg{e.AggregateType, e.EventType, e.AggregateVersion}
		}
	}
	// Sorted keys: concurrent transactions lock rows in one order.
	types := keys(perType)
	args := make([]any, 0, 2*len(types))
	for _, k := range types {
		args = append(args, k, perType[k])
	}
	ec := t.Name("event_counts")
	if _, err := tx.Exec(ctx, `INSERT INTO `+ec+` (aggregate_type, events) VALUES `+projection.Values(len(types), 2, 1)+
		` ON CONFLICT (aggregate_type) DO UPDATE SET events = `+ec+`.events + excluded.events`, args...); err != nil {
		return err
	}
	ids := keys(last)
	args = make([]any, 0, 4*len(ids))
	for _, id := range ids {
		a := last[id]
		args = append(args, id, a.typ, int64(a.version), a.eventType)
	}
	ag := t.Name("aggregates")
	// A redriven event is older than what is stored: keep the newest.
	_, err := tx.Exec(ctx, `INSERT INTO `+ag+` (aggregate_id, aggregate_type, last_version, last_event_type) VALUES `+
		projection.Values(len(ids), 4, 1)+` ON CONFLICT (aggregate_id) DO UPDATE SET
		last_event_type = CASE WHEN excluded.last_version > `+ag+`.last_version THEN excluded.last_event_type ELSE `+ag+`.last_event_type END,
		last_version = CASE WHEN excluded.last_version > `+ag+`.last_version THEN excluded.last_version ELSE `+ag+`.last_version END`, args...)
	return err
}

var errPoison = errors.New("poison")

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// perEvent hides HandleBatch so the runner calls Handle.
type perEvent struct{ *counts }

func (p perEvent) HandleBatch() {}

// readModel dumps both tables in a comparable form.
func readModel(ctx context.Context, db projection.DB, t projection.Tables) (string, error) {
	var b strings.Builder
	err := db.InTx(ctx, func(tx projection.Tx) error {
		rows, err := tx.Query(ctx, `SELECT aggregate_type, events FROM `+t.Name("event_counts")+` ORDER BY aggregate_type`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var typ string
			var n int64
			if err := rows.Scan(&typ, &n); err != nil {
				rows.Close()
				return err
			}
			fmt.Fprintf(&b, "%s=%d\n", typ, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT aggregate_id, last_version, last_event_type FROM `+t.Name("aggregates")+` ORDER BY aggregate_id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, typ string
			var v int64
			if err := rows.Scan(&id, &v, &typ); err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s v%d %s\n", id, v, typ)
		}
		return rows.Err()
	})
	return b.String(), err
}
