package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	msqlite "modernc.org/sqlite"

	"github.com/esflow/esflow/pkg/eventstore"
)

// httpError is an error with the status and message a client may see.
// Handlers return it for anything the client did wrong; every other error
// is classified by [Server.fail].
type httpError struct {
	status  int
	msg     string
	current *uint64 // the aggregate's current version, on conflicts
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func conflict(current uint64, format string, args ...any) error {
	return &httpError{status: http.StatusConflict, msg: fmt.Sprintf(format, args...), current: &current}
}

// errorBody is the JSON body of every error response.
type errorBody struct {
	Error          string  `json:"error"`
	CurrentVersion *uint64 `json:"current_version,omitempty"`
	RequestID      string  `json:"request_id,omitempty"`
}

// fail answers err: client errors with their own message, an unreachable
// database with 503, anything else with a generic 500 whose detail goes to
// the log only.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	body := errorBody{RequestID: requestID(r.Context())}
	status := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		status, body.Error, body.CurrentVersion = he.status, he.msg, he.current
	case errors.Is(err, eventstore.ErrTooLarge):
		status, body.Error = http.StatusRequestEntityTooLarge, "an event is larger than the store accepts"
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		status, body.Error = 499, "request cancelled"
	case unavailable(err):
		status, body.Error = http.StatusServiceUnavailable, "database unavailable, retry later"
		w.Header().Set("Retry-After", "1")
		s.log.WarnContext(r.Context(), "database unavailable", "err", err, "request_id", body.RequestID)
	default:
		body.Error = "internal error"
		s.log.ErrorContext(r.Context(), "request failed", "err", err, "request_id", body.RequestID,
			"method", r.Method, "path", r.URL.Path)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// SQLite primary result codes that mean the database cannot be used right
// now, rather than that the request was wrong (https://sqlite.org/rescode.html).
const (
	sqliteBusy     = 5
	sqliteLocked   = 6
	sqliteNoMem    = 7
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteFull     = 13
	sqliteCantOpen = 14
)

// unavailable reports whether err means the database could not be reached
// or used for a while (connection refused or lost, server shutting down,
// too many connections, SQLite busy or I/O failure), so that the client
// should retry: a 503, not a 500.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			pe.Code == "57P01", // admin_shutdown (also pg_terminate_backend)
			pe.Code == "57P02", // crash_shutdown
			pe.Code == "57P03", // cannot_connect_now
			pe.Code == "53300", // too_many_connections
			pe.Code == "40001", // serialization_failure: retryable as a whole
			pe.Code == "40P01": // deadlock_detected: retryable as a whole
			return true
		}
		return false
	}
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteBusy, sqliteLocked, sqliteNoMem, sqliteReadOnly, sqliteIOErr, sqliteFull, sqliteCantOpen:
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, eventstore.ErrClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	// pgx reports a connection it already found broken as "conn closed",
	// without a type to match.
	return strings.Contains(err.Error(), "conn closed")
}
