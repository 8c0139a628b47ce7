package sqlite

import (
	"strings"

	"github.com/esflow/esflow/pkg/eventstore"
)

// queries holds the SQL the Store runs, built once from the validated,
// quoted schema names. Every value is a ? parameter.
type queries struct {
	insert        string // (stream, position, topic, data)
	streamMaxPrev string // (stream, position): highest position below it
	readStream    string // prefix; callers append conditions, order, limit
	readLog       string // prefix; callers append conditions, order, limit
	maxID         string
	saveSnapshot  string // (stream, position, topic, data)
	latestSnap    string // prefix; callers append bound, order, limit
}

func buildQueries(s eventstore.Schema) queries {
	n := quotedNames(s)
	cols := strings.Join([]string{n.StreamID, n.Position, n.Topic, n.Data}, ", ")
	return queries{
		insert: `INSERT INTO ` + n.Table + ` (` + cols + `) VALUES (?, ?, ?, ?)`,
		streamMaxPrev: `SELECT MAX(` + n.Position + `) FROM ` + n.Table +
			` WHERE ` + n.StreamID + ` = ? AND ` + n.Position + ` < ?`,
		readStream: `SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.Table +
			` WHERE ` + n.StreamID + ` = ?`,
		readLog: `SELECT notification_id, ` + cols + ` FROM ` + n.Table +
			` WHERE notification_id >= ?`,
		maxID: `SELECT COALESCE(MAX(notification_id), 0) FROM ` + n.Table,
		saveSnapshot: `INSERT INTO ` + n.SnapshotTable + ` (` + cols + `) VALUES (?, ?, ?, ?)` +
			` ON CONFLICT (` + n.StreamID + `, ` + n.Position + `) DO UPDATE SET ` +
			n.Topic + ` = excluded.` + n.Topic + `, ` + n.Data + ` = excluded.` + n.Data,
		latestSnap: `SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.SnapshotTable +
			` WHERE ` + n.StreamID + ` = ?`,
	}
}

// positionColumn and topicColumn are the quoted names used when a query
// is completed at call time.
func (s *Store) positionColumn() string { return eventstore.Quote(s.schema.PositionColumn) }
func (s *Store) topicColumn() string    { return eventstore.Quote(s.schema.TopicColumn) }
