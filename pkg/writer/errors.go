package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

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

// unavailable reports whether err means the database could not be reached
// or used for a while, so that the client should retry: a 503, not a 500.
// The backends translate their drivers' errors to eventstore.ErrUnavailable;
// a closed store and an expired deadline say the same.
func unavailable(err error) bool {
	return errors.Is(err, eventstore.ErrUnavailable) ||
		errors.Is(err, eventstore.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}
