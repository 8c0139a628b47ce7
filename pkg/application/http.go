package application

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// LogHandler serves a notification log as JSON: GET <prefix>/<section id>
// (for example /notifications/1,10 or /notifications/current) answers a
// [Section]. A malformed id is a 400 with a JSON error body.
func LogHandler(log NotificationLog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		id := r.URL.Path
		if i := strings.LastIndex(id, "/"); i >= 0 {
			id = id[i+1:]
		}
		if id == "" {
			id = "current"
		}
		sec, err := log.Section(r.Context(), id)
		switch {
		case errors.Is(err, ErrBadSection):
			writeJSONError(w, http.StatusBadRequest, err.Error())
			return
		case err != nil:
			writeJSONError(w, http.StatusInternalServerError, "cannot read notification log")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(sec)
	})
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// RemoteLog reads a notification log served by [LogHandler] in another
// process, so a [Reader] can follow it.
type RemoteLog struct {
	// BaseURL is the handler's prefix, e.g. http://writer:8080/notifications.
	BaseURL string
	// Client defaults to http.DefaultClient.
	Client *http.Client
}

// ErrRemote reports a failed request to a remote notification log.
var ErrRemote = errors.New("application: remote notification log")

// Section implements [NotificationLog].
func (l *RemoteLog) Section(ctx context.Context, id string) (Section, error) {
	c := l.Client
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(l.BaseURL, "/")+"/"+url.PathEscape(id), nil)
	if err != nil {
		return Section{}, fmt.Errorf("%w: %v", ErrRemote, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return Section{}, fmt.Errorf("%w: %w", ErrRemote, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return Section{}, fmt.Errorf("%w: %w", ErrRemote, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		_ = json.Unmarshal(body, &e)
		if resp.StatusCode == http.StatusBadRequest {
			return Section{}, fmt.Errorf("%w: %s", ErrBadSection, e.Error)
		}
		return Section{}, fmt.Errorf("%w: %s: %s", ErrRemote, resp.Status, e.Error)
	}
	var sec Section
	if err := json.Unmarshal(body, &sec); err != nil {
		return Section{}, fmt.Errorf("%w: decode section: %v", ErrRemote, err)
	}
	return sec, nil
}
