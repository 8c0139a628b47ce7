package postgres

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/esflow/esflow/internal/dberr"
	"github.com/esflow/esflow/pkg/eventstore"
)

// TranslateError marks the pgx errors that mean "retry later" as
// [eventstore.ErrUnavailable] (keeping the pgx error as the cause) and
// returns every other error unchanged. Retryable are: any failed connect,
// a connection pgx found closed or broken, SQLSTATE class 08 (connection
// exception), 57P01-03 (admin or crash shutdown, cannot connect now,
// pg_terminate_backend), 53300 (too many connections), 40001
// (serialization failure), 40P01 (deadlock), 55P03 (lock not available,
// lock_timeout) and 57014 (statement timeout). A pool closed under the
// store becomes [eventstore.ErrClosed]. The outbox backend uses it too, so
// both answer alike.
func TranslateError(err error) error {
	if err == nil || errors.Is(err, eventstore.ErrUnavailable) {
		return err
	}
	if errors.Is(err, puddle.ErrClosedPool) {
		// The pool was closed under the store: the store is closed.
		return fmt.Errorf("%w: %w", eventstore.ErrClosed, err)
	}
	if retryable(err) {
		return eventstore.Unavailable(err)
	}
	return err
}

func retryable(err error) bool {
	// A failed connect is retryable whatever the server said (too many
	// connections, starting up, a database not accepting connections).
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03", "57014":
			return true
		}
		return strings.HasPrefix(pe.Code, "08")
	}
	return errors.Is(err, pgconn.ErrConnClosed) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) ||
		dberr.Transport(err)
}
