package writer

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// The operations console: the page at / (console/index.html, rendered with
// the current activity so it reads without JavaScript), its script and
// style under /console/, and the JSON it polls under /v1/console/.
// DESIGN.md says why the charts are hand-drawn SVG fed by client-side
// history.

//go:embed console
var consoleFiles embed.FS

// consoleScan is how many of the latest notifications a stream search by
// type looks through.
const consoleScan = 5000

// Projections is what the console shows of the projectors running next
// to the writer (cmd/esflow's), and how it re-drives their dead letters.
// Config.Projections is optional: without it the console shows no
// projections and re-drive answers 404.
type Projections interface {
	// ProjectionStatus reports every projection's progress.
	ProjectionStatus(ctx context.Context) ([]ProjectionStatus, error)
	// Redrive applies the named projection's dead letters again. An
	// unknown name should fail with an error matching ErrUnknownProjection.
	Redrive(ctx context.Context, name string) (RedriveResult, error)
}

// ErrUnknownProjection is what [Projections.Redrive] returns for a name it
// does not know; the console answers 404.
var ErrUnknownProjection = errors.New("writer: unknown projection")

// ProjectionStatus is one projection's progress as the console shows it.
type ProjectionStatus struct {
	Name         string             `json:"name"`
	Running      bool               `json:"running"`
	Ready        bool               `json:"ready"`
	Applied      uint64             `json:"applied"`
	Duplicates   uint64             `json:"duplicates"`
	DeadLettered uint64             `json:"dead_lettered"`
	LastEventAge float64            `json:"last_event_age_seconds"`
	LastError    string             `json:"last_error,omitempty"`
	Partitions   []PartitionLag     `json:"partitions"`
	DeadLetters  []DeadLetterStatus `json:"dead_letters"`
}

// PartitionLag is a projection's position in one partition.
type PartitionLag struct {
	Topic         string `json:"topic"`
	Partition     int    `json:"partition"`
	Offset        int64  `json:"offset"`
	HighWaterMark int64  `json:"high_water_mark"`
	Lag           int64  `json:"lag"`
}

// DeadLetterStatus is one dead-lettered event.
type DeadLetterStatus struct {
	EventID     string `json:"event_id"`
	AggregateID string `json:"aggregate_id"`
	Version     uint64 `json:"version"`
	Error       string `json:"error"`
	Redriven    bool   `json:"redriven"`
}

// RedriveResult counts what a re-drive did.
type RedriveResult struct {
	Applied int `json:"applied"`
	Skipped int `json:"skipped"`
	Failed  int `json:"failed"`
}

// consoleStats is one sample the console's charts plot: counters, from
// which the page computes rates between two samples.
type consoleStats struct {
	Time             time.Time          `json:"time"`
	LastNotification uint64             `json:"last_notification"`
	Backlog          int64              `json:"backlog"`
	Published        uint64             `json:"published"`
	Projections      []ProjectionStatus `json:"projections"`
}

func (s *Server) handleConsoleStats(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	b, err := s.app.Outbox().Backlog(ctx, outbox.Shard{})
	if err != nil {
		return err
	}
	last, err := s.app.Recorder().MaxNotificationID(ctx)
	if err != nil {
		return err
	}
	out := consoleStats{Time: time.Now().UTC(), LastNotification: last, Backlog: b.Messages, Projections: []ProjectionStatus{}}
	// One outbox message per event: what is not waiting was published.
	if uint64(b.Messages) < last {
		out.Published = last - uint64(b.Messages)
	}
	if s.projections != nil {
		ps, err := s.projections.ProjectionStatus(ctx)
		if err != nil {
			return fmt.Errorf("projection status: %w", err)
		}
		for i := range ps {
			if ps[i].Partitions == nil {
				ps[i].Partitions = []PartitionLag{}
			}
			if ps[i].DeadLetters == nil {
				ps[i].DeadLetters = []DeadLetterStatus{}
			}
		}
		out.Projections = ps
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
	return nil
}

type streamSummary struct {
	StreamID         uuid.UUID `json:"stream_id"`
	AggregateType    string    `json:"aggregate_type"`
	Events           uint64    `json:"events"`
	LastType         string    `json:"last_type"`
	LastNotification uint64    `json:"last_notification,omitempty"`
	Encrypted        bool      `json:"encrypted"`
}

// handleConsoleStreams finds streams: ?q= an aggregate id (that stream),
// or an aggregate or event type (the streams among the latest
// notifications that have it, most recently active first).
func (s *Server) handleConsoleStreams(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	out := []streamSummary{}
	if id, err := uuid.Parse(q); err == nil && len(q) == 36 {
		h, err := s.head(ctx, id)
		if err != nil {
			return err
		}
		if h.last != nil {
			out = append(out, streamSummary{StreamID: id, AggregateType: h.last.AggregateType, Events: h.version, LastType: h.last.Type})
		}
		writeJSON(w, http.StatusOK, map[string]any{"streams": out})
		return nil
	}
	last, err := s.app.Recorder().MaxNotificationID(ctx)
	if err != nil {
		return err
	}
	start := uint64(1)
	if last > consoleScan {
		start = last - consoleScan + 1
	}
	index := map[uuid.UUID]int{}
	for start <= last {
		ns, err := s.app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: start, Limit: 500})
		if err != nil {
			return err
		}
		if len(ns) == 0 {
			break
		}
		for _, n := range ns {
			start = n.ID + 1
			es, err := s.codec.decode([]eventstore.Record{n.Record})
			if err != nil {
				continue // undecodable (wrong key, unknown type): not searchable by type
			}
			e := es[0]
			if q != "" && e.AggregateType != q && e.Type != q {
				continue
			}
			sum := streamSummary{StreamID: n.StreamID, AggregateType: e.AggregateType, Events: n.Position + 1,
				LastType: e.Type, LastNotification: n.ID, Encrypted: eventstore.Encrypted(n.Data)}
			if i, ok := index[n.StreamID]; ok {
				out[i] = sum
			} else {
				index[n.StreamID] = len(out)
				out = append(out, sum)
			}
		}
	}
	// Most recently active first.
	sort.Slice(out, func(i, j int) bool { return out[i].LastNotification > out[j].LastNotification })
	if len(out) > 100 {
		out = out[:100]
	}
	writeJSON(w, http.StatusOK, map[string]any{"streams": out})
	return nil
}

type verifyResponse struct {
	StreamID uuid.UUID `json:"stream_id"`
	OK       bool      `json:"ok"`
	Events   int       `json:"events"`
	HeadHash string    `json:"head_hash"`
	Error    string    `json:"error,omitempty"`
}

// handleVerify checks a stream's hash chain (eventstore.VerifyStream):
// every event's own hash, each one's link to the one before, and the head.
// A broken chain is a 200 with ok false: the request worked, the data
// did not.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	v, err := s.app.Store.VerifyStream(r.Context(), id)
	if errors.Is(err, eventstore.ErrNotFound) {
		return notFound("stream %s has no events", id)
	}
	if err != nil {
		return err
	}
	out := verifyResponse{StreamID: id, Events: v.Events, HeadHash: v.Head, OK: v.OK}
	if !v.OK {
		out.Error = v.Problem.Error()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleRedrive(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if s.projections == nil {
		return notFound("no projections run next to this writer")
	}
	res, err := s.projections.Redrive(r.Context(), name)
	if errors.Is(err, ErrUnknownProjection) {
		return notFound("%v", err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// handleConsoleFile serves the console's embedded script and style.
func (s *Server) handleConsoleFile(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	b, err := fs.ReadFile(consoleFiles, "console/"+name)
	if err != nil || name == "index.html" || strings.Contains(name, "/") {
		return notFound("no console file %q", name)
	}
	switch {
	case strings.HasSuffix(name, ".js"):
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".css"):
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	}
	w.Header().Set("Cache-Control", "no-cache")
	_, err = w.Write(b)
	return err
}
