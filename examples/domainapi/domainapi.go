// Package domainapi mounts the seed pages' example domain (package
// examples/domain: World and Example) on an esflow writer, through the
// writer's public API only: [writer.Server.Handle] for the routes and
// [writer.NewAggregates] for load, command and save with optimistic
// concurrency. cmd/writer and cmd/esflow mount it; a service embedding
// package writer mounts its own domain the same way (package
// examples/todo/todoapi is a second, smaller one). openapi.yaml beside this
// file describes the endpoints.
package domainapi

import (
	_ "embed"
	"net/http"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/writer"
)

// OpenAPI describes the endpoints [Mount] adds.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Mount registers the example domain's types in the application's registry
// (when missing) and adds /v1/worlds and /v1/examples to s.
func Mount(s *writer.Server) {
	reg := s.App().Store.Registry()
	if _, _, ok := reg.Lookup("World"); !ok {
		domain.Register(reg)
	}
	worlds := writer.NewAggregates(s, "World", "/v1/worlds", func() *domain.World { return new(domain.World) })
	examples := writer.NewAggregates(s, "Example", "/v1/examples", func() *domain.Example { return new(domain.Example) })

	s.Handle("POST", "/v1/worlds", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			ID    *string `json:"id"`
			Ruler *string `json:"ruler"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
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
		return worlds.Create(w, r, world)
	})
	s.Handle("GET", "/v1/worlds/{id}", func(w http.ResponseWriter, r *http.Request) error {
		world, err := worlds.Get(w, r)
		if err != nil {
			return err
		}
		history := world.History
		if history == nil {
			history = []string{}
		}
		writer.WriteJSON(w, http.StatusOK, worldJSON{ID: world.ID(), Version: world.Version(), Ruler: world.Ruler, History: history})
		return nil
	})
	s.Handle("POST", "/v1/worlds/{id}/make-it-so", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			What            *string `json:"what"`
			ExpectedVersion *uint64 `json:"expected_version"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
			return err
		}
		if err := requireText("what", req.What); err != nil {
			return err
		}
		return worlds.Command(w, r, req.ExpectedVersion, func(w *domain.World) error { return w.MakeItSo(*req.What) })
	})
	s.Handle("PUT", "/v1/worlds/{id}/ruler", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			Ruler           *string `json:"ruler"`
			ExpectedVersion *uint64 `json:"expected_version"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
			return err
		}
		if err := requireText("ruler", req.Ruler); err != nil {
			return err
		}
		return worlds.Command(w, r, req.ExpectedVersion, func(w *domain.World) error { return w.SetRuler(*req.Ruler) })
	})
	s.Handle("DELETE", "/v1/worlds/{id}", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			ExpectedVersion *uint64 `json:"expected_version"`
		}
		if err := s.DecodeJSON(w, r, &req, true); err != nil {
			return err
		}
		return worlds.Command(w, r, req.ExpectedVersion, (*domain.World).Discard)
	})

	s.Handle("POST", "/v1/examples", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			ID  *string `json:"id"`
			Foo *string `json:"foo"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
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
		return examples.Create(w, r, x)
	})
	s.Handle("GET", "/v1/examples/{id}", func(w http.ResponseWriter, r *http.Request) error {
		x, err := examples.Get(w, r)
		if err != nil {
			return err
		}
		writer.WriteJSON(w, http.StatusOK, exampleJSON{ID: x.ID(), Version: x.Version(), Foo: x.Foo})
		return nil
	})
	s.Handle("PUT", "/v1/examples/{id}/foo", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			Foo             *string `json:"foo"`
			ExpectedVersion *uint64 `json:"expected_version"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
			return err
		}
		if err := requireText("foo", req.Foo); err != nil {
			return err
		}
		return examples.Command(w, r, req.ExpectedVersion, func(x *domain.Example) error { return x.SetFoo(*req.Foo) })
	})
	s.Handle("DELETE", "/v1/examples/{id}", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			ExpectedVersion *uint64 `json:"expected_version"`
		}
		if err := s.DecodeJSON(w, r, &req, true); err != nil {
			return err
		}
		return examples.Command(w, r, req.ExpectedVersion, (*domain.Example).Discard)
	})
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
		return writer.Errorf(http.StatusBadRequest, "field %q is required", field)
	}
	if *v == "" {
		return writer.Errorf(http.StatusBadRequest, "field %q must not be empty", field)
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
		return nil, writer.Errorf(http.StatusBadRequest, "field \"id\" %q is not a UUID", *raw)
	}
	return []aggregate.Option{aggregate.WithID(id)}, nil
}
