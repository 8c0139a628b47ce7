// Package readmodel holds the example domain's projections: the worlds
// and examples read models and a generic count of events per aggregate
// and event type. They run with [projection.Runner] on PostgreSQL or
// SQLite; cmd/projector serves them over HTTP.
package readmodel

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/projection"
)

// Topics the relay publishes the example domain's events to.
const (
	WorldTopic   = "esflow.World"
	ExampleTopic = "esflow.Example"
)

// Event types the projections understand.
const (
	created           = "Created"
	attributeChanged  = "AttributeChanged"
	somethingHappened = "SomethingHappened"
	discarded         = "Discarded"
)

// ErrNotFound is returned by the getters for an unknown id.
var ErrNotFound = errors.New("readmodel: not found")

// Worlds maintains the worlds table from World events.
type Worlds struct{}

// Name implements projection.Projection.
func (Worlds) Name() string { return "worlds" }

// Topics implements projection.Projection.
func (Worlds) Topics() []string { return []string{WorldTopic} }

// Tables implements projection.Projection.
func (Worlds) Tables() []string { return []string{"worlds"} }

// Setup implements projection.Projection.
func (Worlds) Setup(ctx context.Context, tx projection.Tx, t projection.Tables) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.Name("worlds")+` (
		id TEXT PRIMARY KEY,
		ruler TEXT NOT NULL,
		history TEXT NOT NULL,
		version BIGINT NOT NULL,
		discarded BOOLEAN NOT NULL)`)
	return err
}

// World is a row of the worlds read model. Version, like the aggregate's
// Version method, counts the events applied (the last event's version
// plus one).
type World struct {
	ID        uuid.UUID `json:"id"`
	Ruler     string    `json:"ruler"`
	History   []string  `json:"history"`
	Version   uint64    `json:"version"`
	Discarded bool      `json:"discarded"`
}

// Handle implements projection.Projection: HandleBatch of one event.
func (w Worlds) Handle(ctx context.Context, tx projection.Tx, t projection.Tables, e projection.Event) error {
	return w.HandleBatch(ctx, tx, t, []projection.Event{e})
}

// HandleBatch implements projection.BatchHandler. It reads the batch's
// rows in one query, applies the events in order in memory and writes
// the rows back with one multi-row upsert (per 500 worlds), so a batch
// costs two statements instead of two per event. A redriven (older)
// event still counts but never lowers the stored version.
func (Worlds) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	tn := t.Name("worlds")
	ids := aggregateIDs(events)
	cur := make(map[uuid.UUID]World, len(ids))
	err := inChunks(ids, func(chunk []string) error {
		rows, err := tx.Query(ctx, `SELECT `+worldColumns+` FROM `+tn+` WHERE id IN (`+placeholders(len(chunk))+`)`, anys(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			w, err := scanWorld(rows.Scan)
			if err != nil {
				return err
			}
			cur[w.ID] = w
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	for _, e := range events {
		w := cur[e.AggregateID]
		w.ID = e.AggregateID
		if err := applyWorld(&w, e); err != nil {
			return err
		}
		cur[e.AggregateID] = w
	}
	return inChunks(ids, func(chunk []string) error {
		args := make([]any, 0, 5*len(chunk))
		for _, id := range chunk {
			w := cur[uuid.MustParse(id)]
			history, err := json.Marshal(w.History)
			if err != nil {
				return err
			}
			args = append(args, id, w.Ruler, string(history), int64(w.Version), w.Discarded)
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+tn+` (id, ruler, history, version, discarded) VALUES `+projection.Values(len(chunk), 5, 1)+`
		ON CONFLICT (id) DO UPDATE SET ruler = excluded.ruler, history = excluded.history,
		version = excluded.version, discarded = excluded.discarded`, args...)
		return err
	})
}

// applyWorld applies one event to w.
func applyWorld(w *World, e projection.Event) error {
	switch e.EventType {
	case created:
		var p aggregate.Created
		if err := e.Decode(&p); err != nil {
			return err
		}
		if r, ok := p.Attributes["ruler"].(string); ok {
			w.Ruler = r
		}
	case attributeChanged:
		var p aggregate.AttributeChanged
		if err := e.Decode(&p); err != nil {
			return err
		}
		if r, ok := p.Value.(string); ok && p.Name == "ruler" {
			w.Ruler = r
		}
	case somethingHappened:
		var p struct {
			What string `json:"what"`
		}
		if err := e.Decode(&p); err != nil {
			return err
		}
		w.History = append(w.History, p.What)
	case discarded:
		w.Discarded = true
	}
	w.Version = max(w.Version, e.AggregateVersion+1)
	if w.History == nil {
		w.History = []string{}
	}
	return nil
}

const worldColumns = `id, ruler, history, version, discarded`

func scanWorld(scan func(dest ...any) error) (World, error) {
	var (
		w       World
		id      string
		history string
		version int64
	)
	if err := scan(&id, &w.Ruler, &history, &version, &w.Discarded); err != nil {
		return World{}, err
	}
	var err error
	if w.ID, err = uuid.Parse(id); err != nil {
		return World{}, fmt.Errorf("readmodel: world id %q: %w", id, err)
	}
	if err := json.Unmarshal([]byte(history), &w.History); err != nil {
		return World{}, fmt.Errorf("readmodel: history of world %s: %w", id, err)
	}
	w.Version = uint64(version)
	return w, nil
}

// GetWorld reads one world; the error is ErrNotFound when there is none.
func GetWorld(ctx context.Context, tx projection.Tx, t projection.Tables, id uuid.UUID) (World, error) {
	w, err := scanWorld(tx.QueryRow(ctx, `SELECT `+worldColumns+` FROM `+t.Name("worlds")+` WHERE id = $1`, id.String()).Scan)
	if err != nil {
		if isNoRows(err) {
			return World{}, ErrNotFound
		}
		return World{}, err
	}
	return w, nil
}

// ListWorlds reads up to limit worlds ordered by id.
func ListWorlds(ctx context.Context, tx projection.Tx, t projection.Tables, limit int) ([]World, error) {
	rows, err := tx.Query(ctx, `SELECT `+worldColumns+` FROM `+t.Name("worlds")+` ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []World{}
	for rows.Next() {
		w, err := scanWorld(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// Examples maintains the examples table from Example events.
type Examples struct{}

// Name implements projection.Projection.
func (Examples) Name() string { return "examples" }

// Topics implements projection.Projection.
func (Examples) Topics() []string { return []string{ExampleTopic} }

// Tables implements projection.Projection.
func (Examples) Tables() []string { return []string{"examples"} }

// Setup implements projection.Projection.
func (Examples) Setup(ctx context.Context, tx projection.Tx, t projection.Tables) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.Name("examples")+` (
		id TEXT PRIMARY KEY,
		foo TEXT NOT NULL,
		version BIGINT NOT NULL,
		discarded BOOLEAN NOT NULL)`)
	return err
}

// Example is a row of the examples read model. Version counts the events
// applied, like the aggregate's Version method.
type Example struct {
	ID        uuid.UUID `json:"id"`
	Foo       string    `json:"foo"`
	Version   uint64    `json:"version"`
	Discarded bool      `json:"discarded"`
}

// Handle implements projection.Projection: HandleBatch of one event.
func (x Examples) Handle(ctx context.Context, tx projection.Tx, t projection.Tables, e projection.Event) error {
	return x.HandleBatch(ctx, tx, t, []projection.Event{e})
}

// HandleBatch implements projection.BatchHandler: like Worlds, one read
// and one multi-row upsert per batch.
func (Examples) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	tn := t.Name("examples")
	ids := aggregateIDs(events)
	cur := make(map[uuid.UUID]Example, len(ids))
	err := inChunks(ids, func(chunk []string) error {
		rows, err := tx.Query(ctx, `SELECT id, foo, version, discarded FROM `+tn+` WHERE id IN (`+placeholders(len(chunk))+`)`, anys(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			x, err := scanExample(rows.Scan)
			if err != nil {
				return err
			}
			cur[x.ID] = x
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	for _, e := range events {
		x := cur[e.AggregateID]
		x.ID = e.AggregateID
		if err := applyExample(&x, e); err != nil {
			return err
		}
		cur[e.AggregateID] = x
	}
	return inChunks(ids, func(chunk []string) error {
		args := make([]any, 0, 4*len(chunk))
		for _, id := range chunk {
			x := cur[uuid.MustParse(id)]
			args = append(args, id, x.Foo, int64(x.Version), x.Discarded)
		}
		_, err := tx.Exec(ctx, `INSERT INTO `+tn+` (id, foo, version, discarded) VALUES `+projection.Values(len(chunk), 4, 1)+`
		ON CONFLICT (id) DO UPDATE SET foo = excluded.foo, version = excluded.version, discarded = excluded.discarded`, args...)
		return err
	})
}

// applyExample applies one event to x.
func applyExample(x *Example, e projection.Event) error {
	switch e.EventType {
	case created:
		var p aggregate.Created
		if err := e.Decode(&p); err != nil {
			return err
		}
		if f, ok := p.Attributes["foo"].(string); ok {
			x.Foo = f
		}
	case attributeChanged:
		var p aggregate.AttributeChanged
		if err := e.Decode(&p); err != nil {
			return err
		}
		if f, ok := p.Value.(string); ok && p.Name == "foo" {
			x.Foo = f
		}
	case discarded:
		x.Discarded = true
	}
	x.Version = max(x.Version, e.AggregateVersion+1)
	return nil
}

func scanExample(scan func(dest ...any) error) (Example, error) {
	var (
		x       Example
		sid     string
		version int64
	)
	if err := scan(&sid, &x.Foo, &version, &x.Discarded); err != nil {
		return Example{}, err
	}
	var err error
	if x.ID, err = uuid.Parse(sid); err != nil {
		return Example{}, fmt.Errorf("readmodel: example id %q: %w", sid, err)
	}
	x.Version = uint64(version)
	return x, nil
}

// GetExample reads one example; the error is ErrNotFound when there is
// none.
func GetExample(ctx context.Context, tx projection.Tx, t projection.Tables, id uuid.UUID) (Example, error) {
	x, err := scanExample(tx.QueryRow(ctx, `SELECT id, foo, version, discarded FROM `+t.Name("examples")+` WHERE id = $1`, id.String()).Scan)
	if err != nil {
		if isNoRows(err) {
			return Example{}, ErrNotFound
		}
		return Example{}, err
	}
	return x, nil
}

// EventCounts counts events per aggregate type and event type over both
// topics.
type EventCounts struct{}

// Name implements projection.Projection.
func (EventCounts) Name() string { return "event_counts" }

// Topics implements projection.Projection.
func (EventCounts) Topics() []string { return []string{WorldTopic, ExampleTopic} }

// Tables implements projection.Projection.
func (EventCounts) Tables() []string { return []string{"event_counts"} }

// Setup implements projection.Projection.
func (EventCounts) Setup(ctx context.Context, tx projection.Tx, t projection.Tables) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.Name("event_counts")+` (
		aggregate_type TEXT NOT NULL,
		event_type TEXT NOT NULL,
		count BIGINT NOT NULL,
		PRIMARY KEY (aggregate_type, event_type))`)
	return err
}

// Handle implements projection.Projection: HandleBatch of one event.
func (c EventCounts) Handle(ctx context.Context, tx projection.Tx, t projection.Tables, e projection.Event) error {
	return c.HandleBatch(ctx, tx, t, []projection.Event{e})
}

// HandleBatch implements projection.BatchHandler: the batch's counts are
// summed in memory and added with one multi-row upsert, its rows in key
// order so that concurrent batches lock them in the same order.
func (EventCounts) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	type key struct{ agg, event string }
	n := map[key]int64{}
	for _, e := range events {
		n[key{e.AggregateType, e.EventType}]++
	}
	keys := slices.SortedFunc(maps.Keys(n), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.agg, b.agg), cmp.Compare(a.event, b.event))
	})
	args := make([]any, 0, 3*len(keys))
	for _, k := range keys {
		args = append(args, k.agg, k.event, n[k])
	}
	tn := t.Name("event_counts")
	_, err := tx.Exec(ctx, `INSERT INTO `+tn+` (aggregate_type, event_type, count) VALUES `+projection.Values(len(keys), 3, 1)+`
		ON CONFLICT (aggregate_type, event_type) DO UPDATE SET count = `+tn+`.count + excluded.count`, args...)
	return err
}

// Count is a row of the event_counts read model.
type Count struct {
	AggregateType string `json:"aggregate_type"`
	EventType     string `json:"event_type"`
	Count         int64  `json:"count"`
}

// ListCounts reads all counts ordered by aggregate and event type.
func ListCounts(ctx context.Context, tx projection.Tx, t projection.Tables) ([]Count, error) {
	rows, err := tx.Query(ctx, `SELECT aggregate_type, event_type, count FROM `+t.Name("event_counts")+
		` ORDER BY aggregate_type, event_type`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Count{}
	for rows.Next() {
		var c Count
		if err := rows.Scan(&c.AggregateType, &c.EventType, &c.Count); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func isNoRows(err error) bool { return errors.Is(err, projection.ErrNoRows) }

// aggregateIDs returns the distinct aggregate ids of events, sorted:
// rows are then written in one order by every transaction.
func aggregateIDs(events []projection.Event) []string {
	seen := make(map[uuid.UUID]bool, len(events))
	var ids []string
	for _, e := range events {
		if !seen[e.AggregateID] {
			seen[e.AggregateID] = true
			ids = append(ids, e.AggregateID.String())
		}
	}
	slices.Sort(ids)
	return ids
}

// maxRows bounds the rows of one statement, well under SQLite's and
// PostgreSQL's parameter limits at 5 columns.
const maxRows = 500

// inChunks calls fn with consecutive chunks of ids of at most maxRows.
func inChunks(ids []string, fn func([]string) error) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), maxRows)]
		ids = ids[len(chunk):]
		if err := fn(chunk); err != nil {
			return err
		}
	}
	return nil
}

// placeholders returns "$1,$2,…,$n".
func placeholders(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i + 1))
	}
	return b.String()
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
