package mysql

import (
	"database/sql/driver"
	"strings"
)

// errBadConn makes database/sql discard a connection (see sql.Conn.Raw).
var errBadConn = driver.ErrBadConn

// maxCachedInsertRows is the largest batch whose multi-row INSERT is
// kept prepared; larger batches prepare theirs per call.
const maxCachedInsertRows = 32

// queries holds the SQL the Store runs, built once from the quoted
// names. Every value is a ? parameter.
type queries struct {
	bump        string // (n, table): counter += n, LAST_INSERT_ID = new value
	insertHead  string // INSERT … VALUES; callers append n row groups
	exists      string // (stream, position): 1 when the record exists
	readStream  string // prefix; callers append conditions, order, limit
	readLog     string // prefix; callers append topics, order, limit
	maxID       string
	saveSnap    string // (stream, position, topic, data)
	latestSnap  string // prefix; callers append bound, order, limit
	cols4       string
	insertCache [maxCachedInsertRows + 1]string
}

func buildQueries(n names) queries {
	cols := n.StreamID + `, ` + n.Position + `, ` + n.Topic + `, ` + n.Data
	q := queries{
		// LAST_INSERT_ID(expr) hands the new value back in the OK packet:
		// one round trip takes the lock and the ids.
		bump:       `UPDATE ` + n.Counters + ` SET last_id = LAST_INSERT_ID(last_id + ?) WHERE table_name = ?`,
		insertHead: `INSERT INTO ` + n.Table + ` (notification_id, ` + cols + `) VALUES `,
		exists:     `SELECT 1 FROM ` + n.Table + ` WHERE ` + n.StreamID + ` = ? AND ` + n.Position + ` = ?`,
		readStream: `SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.Table + ` WHERE ` + n.StreamID + ` = ?`,
		readLog:    `SELECT notification_id, ` + cols + ` FROM ` + n.Table + ` WHERE notification_id >= ?`,
		maxID:      `SELECT COALESCE(MAX(notification_id), 0) FROM ` + n.Table,
		saveSnap: `INSERT INTO ` + n.SnapshotTable + ` (` + cols + `) VALUES (?, ?, ?, ?)
ON DUPLICATE KEY UPDATE ` + n.Topic + ` = VALUES(` + n.Topic + `), ` + n.Data + ` = VALUES(` + n.Data + `)`,
		latestSnap: `SELECT ` + n.Position + `, ` + n.Topic + `, ` + n.Data + ` FROM ` + n.SnapshotTable + ` WHERE ` + n.StreamID + ` = ?`,
		cols4:      cols,
	}
	for i := 1; i <= maxCachedInsertRows; i++ {
		q.insertCache[i] = q.buildInsert(i)
	}
	return q
}

func (q *queries) buildInsert(rows int) string {
	var b strings.Builder
	b.Grow(len(q.insertHead) + rows*18)
	b.WriteString(q.insertHead)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?)")
	}
	return b.String()
}

// insert returns the multi-row INSERT for rows records.
func (q *queries) insert(rows int) string {
	if rows <= maxCachedInsertRows {
		return q.insertCache[rows]
	}
	return q.buildInsert(rows)
}
