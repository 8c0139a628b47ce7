package sqlite

import (
	"errors"

	msqlite "modernc.org/sqlite"

	"github.com/esflow/esflow/internal/dberr"
	"github.com/esflow/esflow/pkg/eventstore"
)

// SQLite primary result codes that mean the database cannot be used right
// now, rather than that the request was wrong (https://sqlite.org/rescode.html).
const (
	codeBusy     = 5  // another connection holds the lock past busy_timeout
	codeLocked   = 6  // a table is locked within this connection's cache
	codeNoMem    = 7  // malloc failed
	codeIOErr    = 10 // the OS reported an I/O error
	codeFull     = 13 // disk full
	codeCantOpen = 14 // the database file cannot be opened
)

// TranslateError marks the SQLite errors that mean "retry later" as
// [eventstore.ErrUnavailable] (keeping the driver's error as the cause)
// and returns every other error unchanged: SQLITE_BUSY, LOCKED, NOMEM,
// IOERR, FULL and CANTOPEN (any extended code of them), and a connection
// database/sql reports broken. The outbox backend uses it too.
func TranslateError(err error) error {
	if err == nil || errors.Is(err, eventstore.ErrUnavailable) {
		return err
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case codeBusy, codeLocked, codeNoMem, codeIOErr, codeFull, codeCantOpen:
			return eventstore.Unavailable(err)
		}
		return err
	}
	if dberr.Transport(err) {
		return eventstore.Unavailable(err)
	}
	return err
}
