package writer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

// HandlerFunc is an endpoint a service mounts on the writer with
// [Server.Handle]. An error it returns is answered like the writer's own:
// an error from [Errorf] or [Conflict] with its status and message, a
// sentinel of package eventstore with its status (eventstore.ErrUnavailable
// is 503 with Retry-After), anything else a 500 whose detail is logged.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle mounts h at method and path (http.ServeMux syntax, e.g.
// "/v1/orders/{id}"). Requests pass through the writer's middleware
// (request id, access log, metrics under the route's label) and, when the
// method changes anything (anything but GET and HEAD), the bearer token
// check of Config.Token. Call it before serving [Server.Handler]; it
// panics, as http.ServeMux does, on a pattern that conflicts with one
// already mounted.
func (s *Server) Handle(method, path string, h HandlerFunc) {
	rt := route{method: method, path: path, mutating: method != http.MethodGet && method != http.MethodHead, handle: h}
	s.routes = append(s.routes, rt)
	s.mux.Handle(rt.method+" "+rt.pattern(), s.wrap(rt))
}

// Routes lists the mounted endpoints as "METHOD /path", the writer's own
// first, then those added with [Server.Handle] in order.
func (s *Server) Routes() []string {
	out := make([]string, len(s.routes))
	for i, rt := range s.routes {
		out[i] = rt.method + " " + rt.path
	}
	return out
}

// App is the application the server writes to.
func (s *Server) App() *application.Application { return s.app }

// Errorf is an error a [HandlerFunc] returns to answer status with the
// formatted message in the JSON error body, e.g. Errorf(400, "field %q is
// required", "name").
func Errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// Conflict is a 409 error whose body carries current_version: the version
// the aggregate is at.
func Conflict(current uint64, format string, args ...any) error {
	return conflict(current, format, args...)
}

// WriteJSON answers status with v encoded as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// DecodeJSON reads the request's JSON body into dst the way the writer's
// own endpoints do: one JSON object, no unknown fields, at most
// Config.MaxBodyBytes; every way it is wrong is a 400 (or 413, 415) saying
// what is wrong. An empty body is accepted when optional is true.
func (s *Server) DecodeJSON(w http.ResponseWriter, r *http.Request, dst any, optional bool) error {
	if optional && r.ContentLength == 0 {
		return nil
	}
	return s.decodeBody(w, r, dst)
}

// PathID parses the {id} path value as a non-nil UUID (else 400).
func PathID(r *http.Request) (uuid.UUID, error) { return pathID(r) }

// Aggregates serves the commands and reads of one aggregate type: create,
// load (current or historical) and run a command, with optimistic
// concurrency from an expected version (body field or If-Match) and the
// writer's status codes: 409 with current_version when the aggregate moved
// on, 404 for none, 410 for a discarded one. Build it with [NewAggregates].
type Aggregates[T aggregate.Aggregate] struct {
	s    *Server
	repo *application.Repository[T]
	typ  string
	base string
}

// NewAggregates serves aggregates of type typeName (the name the registry
// knows them by), created by newT, whose resources live under basePath
// (e.g. "/v1/orders", used for Location headers). The type must be
// registered in the application's registry.
func NewAggregates[T aggregate.Aggregate](s *Server, typeName, basePath string, newT func() T) *Aggregates[T] {
	return &Aggregates[T]{s: s, repo: application.NewRepository(s.app.Store, newT), typ: typeName, base: basePath}
}

// Created is the answer to a create or a command: the aggregate's id and
// its version after the save.
type Created struct {
	ID      uuid.UUID `json:"id"`
	Version uint64    `json:"version"`
}

// Create saves the new aggregate a: 201 with Location and ETag, or 409
// when its id exists.
func (g *Aggregates[T]) Create(w http.ResponseWriter, r *http.Request, a T) error {
	root := a.AggregateRoot()
	if err := g.s.app.Save(r.Context(), a); err != nil {
		if errors.Is(err, eventstore.ErrConcurrency) {
			h, herr := g.s.head(r.Context(), root.ID())
			if herr != nil {
				return herr
			}
			return conflict(h.version, "%s %s already exists", g.typ, root.ID())
		}
		return err
	}
	w.Header().Set("Location", g.base+"/"+root.ID().String())
	etag(w, root.Version())
	writeJSON(w, http.StatusCreated, Created{ID: root.ID(), Version: root.Version()})
	return nil
}

// Get loads the aggregate named by the {id} path value, at ?version=V
// (the state after V events) when given, and sets its ETag.
func (g *Aggregates[T]) Get(w http.ResponseWriter, r *http.Request) (T, error) {
	var zero T
	id, err := pathID(r)
	if err != nil {
		return zero, err
	}
	at, err := versionParam(r)
	if err != nil {
		return zero, err
	}
	a, err := g.load(r.Context(), id, at)
	if err != nil {
		return zero, err
	}
	etag(w, a.AggregateRoot().Version())
	return a, nil
}

// Command runs do on the current state of the aggregate named by the {id}
// path value and saves it: 200 with its new version. bodyExpected is the
// request body's expected version, if any (If-Match also works). Two
// commands racing on one aggregate both load version n; the store accepts
// the first append at n and refuses the other: 409.
func (g *Aggregates[T]) Command(w http.ResponseWriter, r *http.Request, bodyExpected *uint64, do func(T) error) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(r, bodyExpected)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := g.load(ctx, id, nil)
	if err != nil {
		return err
	}
	root := a.AggregateRoot()
	if expected != nil && *expected != root.Version() {
		return conflict(root.Version(), "%s %s is at version %d, expected %d", g.typ, id, root.Version(), *expected)
	}
	if err := do(a); err != nil {
		if errors.Is(err, aggregate.ErrDiscarded) {
			return &httpError{status: http.StatusGone, msg: fmt.Sprintf("%s %s was discarded", g.typ, id)}
		}
		return err
	}
	if err := g.s.app.Save(ctx, a); err != nil {
		if errors.Is(err, eventstore.ErrConcurrency) {
			return g.s.conflictNow(ctx, id, root.Version())
		}
		return err
	}
	etag(w, root.Version())
	writeJSON(w, http.StatusOK, Created{ID: id, Version: root.Version()})
	return nil
}

// load returns the aggregate, or a 404 / 410 saying why there is none. at,
// when set, asks for the state after `at` events.
func (g *Aggregates[T]) load(ctx context.Context, id uuid.UUID, at *uint64) (T, error) {
	var (
		a   T
		err error
	)
	if at != nil {
		a, err = g.repo.GetAt(ctx, id, *at)
	} else {
		a, err = g.repo.Get(ctx, id)
	}
	if err == nil && a.AggregateRoot().Type() == g.typ {
		return a, nil
	}
	if unavailable(err) {
		return a, err
	}
	// Say why there is nothing to return, from the stream's last event.
	h, herr := g.s.head(ctx, id)
	if herr != nil {
		if err != nil {
			return a, err
		}
		return a, herr
	}
	switch {
	case h.last == nil || h.last.AggregateType != g.typ:
		return a, notFound("no %s with id %s", g.typ, id)
	case err == nil:
		return a, fmt.Errorf("load %s %s: type %q", g.typ, id, a.AggregateRoot().Type())
	case !errors.Is(err, application.ErrNotFound):
		return a, err
	case at != nil && *at > h.version:
		return a, notFound("%s %s has %d events, not %d", g.typ, id, h.version, *at)
	case h.last.Type == aggregate.TypeName(&aggregate.Discarded{}):
		return a, &httpError{status: http.StatusGone, msg: fmt.Sprintf("%s %s was discarded", g.typ, id)}
	}
	return a, notFound("no %s with id %s at that version", g.typ, id)
}

// versionParam reads ?version=V for historical reads (V >= 1).
func versionParam(r *http.Request) (*uint64, error) {
	v, ok, err := queryUint(r, "version", 0)
	if err != nil || !ok {
		return nil, err
	}
	if v == 0 {
		return nil, badRequest("version must be at least 1 (the state after that many events)")
	}
	return &v, nil
}
