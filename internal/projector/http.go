package projector

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/projection"
)

// listLimit caps GET /worlds.
const listLimit = 100

// Mount registers the read-model endpoints on mux under prefix (""
// or, say, "/read"): GET {prefix}/worlds, {prefix}/worlds/{id},
// {prefix}/examples/{id} and {prefix}/counts.
func (s *Service) Mount(mux *http.ServeMux, prefix string) {
	mux.HandleFunc("GET "+prefix+"/worlds", s.listWorlds)
	mux.HandleFunc("GET "+prefix+"/worlds/{id}", s.getWorld)
	mux.HandleFunc("GET "+prefix+"/examples/{id}", s.getExample)
	mux.HandleFunc("GET "+prefix+"/counts", s.listCounts)
}

func (s *Service) getWorld(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var out readmodel.World
	err := s.read.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.GetWorld(r.Context(), tx, s.worlds.Tables(), id)
		return err
	})
	s.reply(w, out, err)
}

func (s *Service) listWorlds(w http.ResponseWriter, r *http.Request) {
	var out []readmodel.World
	err := s.read.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.ListWorlds(r.Context(), tx, s.worlds.Tables(), listLimit)
		return err
	})
	s.reply(w, out, err)
}

func (s *Service) getExample(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var out readmodel.Example
	err := s.read.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.GetExample(r.Context(), tx, s.examples.Tables(), id)
		return err
	})
	s.reply(w, out, err)
}

func (s *Service) listCounts(w http.ResponseWriter, r *http.Request) {
	var out []readmodel.Count
	err := s.read.InTx(r.Context(), func(tx projection.Tx) (err error) {
		out, err = readmodel.ListCounts(r.Context(), tx, s.counts.Tables())
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

func (s *Service) reply(w http.ResponseWriter, v any, err error) {
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
