package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/ops"
	"github.com/esflow/esflow/pkg/projection"
)

// listLimit caps GET /worlds.
const listLimit = 100

// runners are the service's projection runners.
type runners struct{ worlds, examples, counts *projection.Runner }

func (rs runners) all() []*projection.Runner {
	return []*projection.Runner{rs.worlds, rs.examples, rs.counts}
}

type server struct {
	db  projection.DB
	rs  runners
	log *slog.Logger
}

// newServer returns the HTTP API over the read models in db, whose
// tables are those of rs's runners, with /healthz, /readyz and /metrics.
func newServer(db projection.DB, rs runners, reg *prometheus.Registry, log *slog.Logger) http.Handler {
	s := &server{db: db, rs: rs, log: log}
	live := map[string]ops.Check{"process": func(context.Context) error { return nil }}
	ready := map[string]ops.Check{"projections": s.ready}
	mux := ops.Handler(reg, live, ready)
	mux.HandleFunc("GET /worlds", s.listWorlds)
	mux.HandleFunc("GET /worlds/{id}", s.getWorld)
	mux.HandleFunc("GET /examples/{id}", s.getExample)
	mux.HandleFunc("GET /counts", s.counts)
	return mux
}

func (s *server) ready(context.Context) error {
	for _, r := range s.rs.all() {
		if !r.Ready() {
			return errors.New("not caught up")
		}
	}
	return nil
}

func (s *server) getWorld(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var out readmodel.World
	err := s.db.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.GetWorld(r.Context(), tx, s.rs.worlds.Tables(), id)
		return err
	})
	s.reply(w, out, err)
}

func (s *server) listWorlds(w http.ResponseWriter, r *http.Request) {
	var out []readmodel.World
	err := s.db.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.ListWorlds(r.Context(), tx, s.rs.worlds.Tables(), listLimit)
		return err
	})
	s.reply(w, out, err)
}

func (s *server) getExample(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var out readmodel.Example
	err := s.db.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.GetExample(r.Context(), tx, s.rs.examples.Tables(), id)
		return err
	})
	s.reply(w, out, err)
}

func (s *server) counts(w http.ResponseWriter, r *http.Request) {
	var out []readmodel.Count
	err := s.db.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.ListCounts(r.Context(), tx, s.rs.counts.Tables())
		return err
	})
	s.reply(w, out, err)
}

func pathID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"malformed id: want a UUID"})
		return uuid.Nil, false
	}
	return id, true
}

type errorBody struct {
	Error string `json:"error"`
}

func (s *server) reply(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, readmodel.ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{"not found"})
	default:
		s.log.Error("read model query", "error", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{"internal error"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
