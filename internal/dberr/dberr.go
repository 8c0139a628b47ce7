// Package dberr holds what the database backends' error translations
// share: recognising a failure of the connection itself (refused, reset,
// closed, timed out), whatever the driver. Each backend adds its own
// driver's codes and marks the result with eventstore.Unavailable.
package dberr

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"
)

// Transport reports whether err is a failure to reach or keep a
// connection: a network error, a connection refused, reset or closed, an
// EOF from a connection the server dropped, or a deadline that expired
// while waiting for one. Such a request may succeed when retried.
func Transport(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, context.DeadlineExceeded)
}
