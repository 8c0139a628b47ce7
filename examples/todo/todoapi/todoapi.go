// Package todoapi mounts the to-do domain (package examples/todo) on an
// esflow writer using nothing but the writer's public API, as a team
// embedding package writer would mount its own:
//
//	srv, _ := writer.New(writer.Config{App: app})
//	todoapi.Mount(srv)
//
// Endpoints: POST /v1/lists {"title"}, GET /v1/lists/{id}, POST
// /v1/lists/{id}/items {"text"}, POST /v1/lists/{id}/items/{n}/done, each
// command with an optional expected version (If-Match).
package todoapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/esflow/esflow/examples/todo"
	"github.com/esflow/esflow/pkg/writer"
)

// Mount registers the to-do types in the application's registry (when
// missing) and adds the /v1/lists endpoints to s.
func Mount(s *writer.Server) {
	reg := s.App().Store.Registry()
	if _, _, ok := reg.Lookup("List"); !ok {
		todo.Register(reg)
	}
	lists := writer.NewAggregates(s, "List", "/v1/lists", func() *todo.List { return new(todo.List) })

	s.Handle("POST", "/v1/lists", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			Title string `json:"title"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
			return err
		}
		if req.Title == "" {
			return writer.Errorf(http.StatusBadRequest, "field \"title\" is required")
		}
		l, err := todo.NewList(req.Title)
		if err != nil {
			return err
		}
		return lists.Create(w, r, l)
	})
	s.Handle("GET", "/v1/lists/{id}", func(w http.ResponseWriter, r *http.Request) error {
		l, err := lists.Get(w, r)
		if err != nil {
			return err
		}
		items := l.Items
		if items == nil {
			items = []todo.Item{}
		}
		writer.WriteJSON(w, http.StatusOK, map[string]any{"id": l.ID(), "version": l.Version(), "title": l.Title, "items": items})
		return nil
	})
	s.Handle("POST", "/v1/lists/{id}/items", func(w http.ResponseWriter, r *http.Request) error {
		var req struct {
			Text string `json:"text"`
		}
		if err := s.DecodeJSON(w, r, &req, false); err != nil {
			return err
		}
		if req.Text == "" {
			return writer.Errorf(http.StatusBadRequest, "field \"text\" is required")
		}
		return lists.Command(w, r, nil, func(l *todo.List) error { return l.Add(req.Text) })
	})
	s.Handle("POST", "/v1/lists/{id}/items/{n}/done", func(w http.ResponseWriter, r *http.Request) error {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil {
			return writer.Errorf(http.StatusBadRequest, "item %q is not a number", r.PathValue("n"))
		}
		err = lists.Command(w, r, nil, func(l *todo.List) error { return l.Done(n) })
		if errors.Is(err, todo.ErrNoSuchItem) {
			return writer.Errorf(http.StatusNotFound, "%v", err)
		}
		return err
	})
}
