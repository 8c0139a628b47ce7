package eventstore

import (
	"fmt"
	"regexp"
)

// Schema names the table and columns a SQL backend stores records in. The
// zero value means [DefaultSchema]; [StoredEventsSchema] is the seed
// pages' alternative. Names are validated with [Schema.Validate] and
// quoted before they reach SQL: they are never interpolated raw.
type Schema struct {
	Table          string // default "events"
	StreamIDColumn string // default "sequence_id"
	PositionColumn string // default "position"
	TopicColumn    string // default "topic"
	DataColumn     string // default "data"
	SnapshotTable  string // default Table + "_snapshots"
}

// DefaultSchema is the "sequenced items" layout: events(sequence_id,
// position, topic, data).
func DefaultSchema() Schema {
	return Schema{
		Table:          "events",
		StreamIDColumn: "sequence_id",
		PositionColumn: "position",
		TopicColumn:    "topic",
		DataColumn:     "data",
	}.WithDefaults()
}

// StoredEventsSchema is the seed pages' alternative layout:
// stored_events(aggregate_id, aggregate_version, event_type, state).
func StoredEventsSchema() Schema {
	return Schema{
		Table:          "stored_events",
		StreamIDColumn: "aggregate_id",
		PositionColumn: "aggregate_version",
		TopicColumn:    "event_type",
		DataColumn:     "state",
	}.WithDefaults()
}

// WithDefaults fills empty fields with the defaults.
func (s Schema) WithDefaults() Schema {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&s.Table, "events")
	def(&s.StreamIDColumn, "sequence_id")
	def(&s.PositionColumn, "position")
	def(&s.TopicColumn, "topic")
	def(&s.DataColumn, "data")
	def(&s.SnapshotTable, s.Table+"_snapshots")
	return s
}

// identifier accepts plain lower-case SQL identifiers that need no
// quoting in any supported database and fit PostgreSQL's 63-byte limit
// (with room for the suffixes the backends add to index names).
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,47}$`)

// reserved columns the backends add next to the configured ones.
var reserved = map[string]bool{"notification_id": true, "tx_id": true, "seq": true}

// Validate reports an error matching ErrInvalidIdentifier when a name is
// not a plain identifier or two columns share a name.
func (s Schema) Validate() error {
	s = s.WithDefaults()
	names := []struct{ what, v string }{
		{"table", s.Table}, {"snapshot table", s.SnapshotTable},
		{"stream id column", s.StreamIDColumn}, {"position column", s.PositionColumn},
		{"topic column", s.TopicColumn}, {"data column", s.DataColumn},
	}
	seen := map[string]string{}
	for i, n := range names {
		if !identifier.MatchString(n.v) {
			return fmt.Errorf("%w: %s %q (want [a-z_][a-z0-9_]*, at most 48 bytes)", ErrInvalidIdentifier, n.what, n.v)
		}
		if i < 2 {
			continue
		}
		if reserved[n.v] {
			return fmt.Errorf("%w: %s %q is reserved", ErrInvalidIdentifier, n.what, n.v)
		}
		if other, dup := seen[n.v]; dup {
			return fmt.Errorf("%w: %s and %s are both %q", ErrInvalidIdentifier, other, n.what, n.v)
		}
		seen[n.v] = n.what
	}
	if s.Table == s.SnapshotTable {
		return fmt.Errorf("%w: table and snapshot table are both %q", ErrInvalidIdentifier, s.Table)
	}
	return nil
}

// Quote returns the identifier in double quotes. Callers validate first;
// quoting is a second line of defence, not the first.
func Quote(ident string) string { return `"` + ident + `"` }
