package writer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

// The example domain's commands. Each loads the aggregate, checks the
// optional expected version, runs the command and saves through the
// application (events and outbox messages in one transaction). Two
// commands racing on one aggregate both load version n; the store accepts
// the first append at n and refuses the other with ErrConcurrency: 409.

type created struct {
	ID      uuid.UUID `json:"id"`
	Version uint64    `json:"version"`
}

type worldJSON struct {
	ID      uuid.UUID `json:"id"`
	Version uint64    `json:"version"`
	Ruler   string    `json:"ruler"`
	History []string  `json:"history"`
}

type exampleJSON struct {
	ID      uuid.UUID `json:"id"`
	Version uint64    `json:"version"`
	Foo     string    `json:"foo"`
}

// requireText checks a required string field.
func requireText(field string, v *string) error {
	if v == nil {
		return badRequest("field %q is required", field)
	}
	if *v == "" {
		return badRequest("field %q must not be empty", field)
	}
	return nil
}

// optionalID parses the optional client-chosen id of a create command.
func optionalID(raw *string) ([]aggregate.Option, error) {
	if raw == nil {
		return nil, nil
	}
	id, err := uuid.Parse(*raw)
	if err != nil || len(*raw) != 36 || id == uuid.Nil {
		return nil, badRequest("field \"id\" %q is not a UUID", *raw)
	}
	return []aggregate.Option{aggregate.WithID(id)}, nil
}

// createAggregate saves a new aggregate: 201, or 409 when its id exists.
func (s *Server) createAggregate(w http.ResponseWriter, r *http.Request, a aggregate.Aggregate, kind, path string) error {
	root := a.AggregateRoot()
	if err := s.app.Save(r.Context(), a); err != nil {
		if errors.Is(err, eventstore.ErrConcurrency) {
			h, herr := s.head(r.Context(), root.ID())
			if herr != nil {
				return herr
			}
			return conflict(h.version, "%s %s already exists", kind, root.ID())
		}
		return err
	}
	w.Header().Set("Location", path+"/"+root.ID().String())
	etag(w, root.Version())
	writeJSON(w, http.StatusCreated, created{ID: root.ID(), Version: root.Version()})
	return nil
}

// load returns the aggregate of the given type, or a 404 / 410 saying why
// there is none. at, when set, asks for the state after `at` events.
func load[T aggregate.Aggregate](ctx context.Context, s *Server, repo *application.Repository[T], id uuid.UUID, typ string, at *uint64) (T, error) {
	var (
		a   T
		err error
	)
	if at != nil {
		a, err = repo.GetAt(ctx, id, *at)
	} else {
		a, err = repo.Get(ctx, id)
	}
	if err == nil && a.AggregateRoot().Type() == typ {
		return a, nil
	}
	if err != nil && unavailable(err) {
		return a, err
	}
	// Say why there is nothing to return, from the stream's last event.
	h, herr := s.head(ctx, id)
	if herr != nil {
		if err != nil {
			return a, err
		}
		return a, herr
	}
	switch {
	case h.last == nil || h.last.AggregateType != typ:
		return a, notFound("no %s with id %s", typ, id)
	case err == nil:
		return a, fmt.Errorf("load %s %s: type %q", typ, id, a.AggregateRoot().Type())
	case !errors.Is(err, application.ErrNotFound):
		return a, err
	case at != nil && *at > h.version:
		return a, notFound("%s %s has %d events, not %d", typ, id, h.version, *at)
	case h.last.Type == aggregate.TypeName(&aggregate.Discarded{}):
		return a, &httpError{status: http.StatusGone, msg: fmt.Sprintf("%s %s was discarded", typ, id)}
	}
	return a, notFound("no %s with id %s at that version", typ, id)
}

// command runs do on the current state of aggregate id and saves it.
func command[T aggregate.Aggregate](s *Server, w http.ResponseWriter, r *http.Request, repo *application.Repository[T],
	typ string, bodyExpected *uint64, do func(T) error) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(r, bodyExpected)
	if err != nil {
		return err
	}
	ctx := r.Context()
	a, err := load(ctx, s, repo, id, typ, nil)
	if err != nil {
		return err
	}
	root := a.AggregateRoot()
	if expected != nil && *expected != root.Version() {
		return conflict(root.Version(), "%s %s is at version %d, expected %d", typ, id, root.Version(), *expected)
	}
	if err := do(a); err != nil {
		if errors.Is(err, aggregate.ErrDiscarded) {
			return &httpError{status: http.StatusGone, msg: fmt.Sprintf("%s %s was discarded", typ, id)}
		}
		return err
	}
	if err := s.app.Save(ctx, a); err != nil {
		if errors.Is(err, eventstore.ErrConcurrency) {
			return s.conflictNow(ctx, id, root.Version())
		}
		return err
	}
	etag(w, root.Version())
	writeJSON(w, http.StatusOK, created{ID: id, Version: root.Version()})
	return nil
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

// decodeOptionalBody is decodeBody for commands whose body may be empty.
func (s *Server) decodeOptionalBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return s.decodeBody(w, r, dst)
}

// Worlds.

func (s *Server) createWorld(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ID    *string `json:"id"`
		Ruler *string `json:"ruler"`
	}
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := requireText("ruler", req.Ruler); err != nil {
		return err
	}
	opts, err := optionalID(req.ID)
	if err != nil {
		return err
	}
	world, err := domain.NewWorld(*req.Ruler, opts...)
	if err != nil {
		return err
	}
	return s.createAggregate(w, r, world, "World", "/v1/worlds")
}

func (s *Server) getWorld(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	at, err := versionParam(r)
	if err != nil {
		return err
	}
	world, err := load(r.Context(), s, s.worlds, id, "World", at)
	if err != nil {
		return err
	}
	out := worldJSON{ID: id, Version: world.Version(), Ruler: world.Ruler, History: world.History}
	if out.History == nil {
		out.History = []string{}
	}
	etag(w, out.Version)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) makeItSo(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		What            *string `json:"what"`
		ExpectedVersion *uint64 `json:"expected_version"`
	}
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := requireText("what", req.What); err != nil {
		return err
	}
	return command(s, w, r, s.worlds, "World", req.ExpectedVersion, func(w *domain.World) error { return w.MakeItSo(*req.What) })
}

func (s *Server) setRuler(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Ruler           *string `json:"ruler"`
		ExpectedVersion *uint64 `json:"expected_version"`
	}
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := requireText("ruler", req.Ruler); err != nil {
		return err
	}
	return command(s, w, r, s.worlds, "World", req.ExpectedVersion, func(w *domain.World) error { return w.SetRuler(*req.Ruler) })
}

func (s *Server) discardWorld(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ExpectedVersion *uint64 `json:"expected_version"`
	}
	if err := s.decodeOptionalBody(w, r, &req); err != nil {
		return err
	}
	return command(s, w, r, s.worlds, "World", req.ExpectedVersion, (*domain.World).Discard)
}

// Examples.

func (s *Server) createExample(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ID  *string `json:"id"`
		Foo *string `json:"foo"`
	}
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := requireText("foo", req.Foo); err != nil {
		return err
	}
	opts, err := optionalID(req.ID)
	if err != nil {
		return err
	}
	x, err := domain.NewExample(*req.Foo, opts...)
	if err != nil {
		return err
	}
	return s.createAggregate(w, r, x, "Example", "/v1/examples")
}

func (s *Server) getExample(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	at, err := versionParam(r)
	if err != nil {
		return err
	}
	x, err := load(r.Context(), s, s.examples, id, "Example", at)
	if err != nil {
		return err
	}
	etag(w, x.Version())
	writeJSON(w, http.StatusOK, exampleJSON{ID: id, Version: x.Version(), Foo: x.Foo})
	return nil
}

func (s *Server) setFoo(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Foo             *string `json:"foo"`
		ExpectedVersion *uint64 `json:"expected_version"`
	}
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if err := requireText("foo", req.Foo); err != nil {
		return err
	}
	return command(s, w, r, s.examples, "Example", req.ExpectedVersion, func(x *domain.Example) error { return x.SetFoo(*req.Foo) })
}

func (s *Server) discardExample(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ExpectedVersion *uint64 `json:"expected_version"`
	}
	if err := s.decodeOptionalBody(w, r, &req); err != nil {
		return err
	}
	return command(s, w, r, s.examples, "Example", req.ExpectedVersion, (*domain.Example).Discard)
}
