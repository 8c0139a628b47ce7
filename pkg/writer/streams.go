package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

// MaxEventsPerAppend caps the events of one generic append request.
const MaxEventsPerAppend = 1000

// MaxReadLimit caps the events one stream read returns.
const MaxReadLimit = 1000

type appendRequest struct {
	ExpectedVersion *uint64    `json:"expected_version"`
	AggregateType   string     `json:"aggregate_type"`
	Events          []newEvent `json:"events"`
}

type newEvent struct {
	Type     string              `json:"type"`
	Data     json.RawMessage     `json:"data"`
	Metadata *aggregate.Metadata `json:"metadata"`
}

type appendedEvent struct {
	ID      uuid.UUID `json:"id"`
	Version uint64    `json:"version"`
}

type appendResponse struct {
	StreamID uuid.UUID       `json:"stream_id"`
	Version  uint64          `json:"version"`
	Events   []appendedEvent `json:"events"`
}

// head describes the end of a stream: its length, and its last event when
// it has one.
type head struct {
	version uint64
	last    *aggregate.Event
}

func (s *Server) head(ctx context.Context, id uuid.UUID) (head, error) {
	recs, err := s.app.Recorder().ReadStream(ctx, id, eventstore.StreamQuery{Descending: true, Limit: 1})
	if err != nil || len(recs) == 0 {
		return head{}, err
	}
	events, err := s.codec.decode(recs)
	if err != nil {
		return head{}, err
	}
	return head{version: events[0].Version + 1, last: &events[0]}, nil
}

// handleCreateStream starts a new stream under an id the server chooses
// (a random UUID), for clients without a UUID generator at hand; the
// answer's stream_id and Location name it. expected_version must be 0.
func (s *Server) handleCreateStream(w http.ResponseWriter, r *http.Request) error {
	r.SetPathValue("id", uuid.NewString())
	return s.handleAppend(w, r)
}

// handleAppend appends generic events to a stream; see DESIGN.md for how
// they map onto the store.
func (s *Server) handleAppend(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var req appendRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	expected, err := expectedVersion(r, req.ExpectedVersion)
	if err != nil {
		return err
	}
	if expected == nil {
		return badRequest("expected_version is required (0 for a new stream)")
	}
	if req.AggregateType != "" {
		if err := s.checkGenericName("aggregate_type", req.AggregateType); err != nil {
			return err
		}
	}
	if len(req.Events) == 0 {
		return badRequest("events must hold at least one event")
	}
	if len(req.Events) > MaxEventsPerAppend {
		return badRequest("at most %d events per request, got %d", MaxEventsPerAppend, len(req.Events))
	}
	payloads := make([]json.RawMessage, len(req.Events))
	for i, e := range req.Events {
		if err := s.checkGenericName(fmt.Sprintf("events[%d].type", i), e.Type); err != nil {
			return err
		}
		if payloads[i], err = compactObject(e.Data); err != nil {
			return badRequest("events[%d].data %s", i, err.Error())
		}
	}

	ctx := r.Context()
	h, err := s.head(ctx, id)
	if err != nil {
		return err
	}
	if h.version != *expected {
		return conflict(h.version, "stream %s has %d events, expected %d", id, h.version, *expected)
	}
	aggType := req.AggregateType
	prevHash := ""
	if h.last != nil {
		prevHash = h.last.Hash
		switch {
		case s.codec.domainType(h.last.AggregateType):
			return &httpError{status: http.StatusUnprocessableEntity,
				msg: fmt.Sprintf("stream %s is a %s; change it through its command endpoints", id, h.last.AggregateType)}
		case aggType != "" && aggType != h.last.AggregateType:
			return &httpError{status: http.StatusUnprocessableEntity,
				msg: fmt.Sprintf("stream %s has aggregate_type %q, not %q", id, h.last.AggregateType, aggType)}
		}
		aggType = h.last.AggregateType
	}
	if aggType == "" {
		aggType = DefaultStreamType
	}

	now := time.Now().UTC().Truncate(time.Microsecond)
	events := make([]aggregate.Event, len(req.Events))
	out := appendResponse{StreamID: id, Version: *expected + uint64(len(events)), Events: make([]appendedEvent, len(events))}
	for i, in := range req.Events {
		if err := s.codec.register(in.Type); err != nil {
			return err
		}
		e := aggregate.Event{
			ID: uuid.New(), AggregateID: id, AggregateType: aggType, Version: *expected + uint64(i),
			Type: in.Type, Time: now, Payload: &rawPayload{JSON: payloads[i]}, PreviousHash: prevHash,
		}
		if in.Metadata != nil {
			e.Metadata = *in.Metadata
		}
		if err := aggregate.Seal(&e); err != nil {
			return err
		}
		prevHash = e.Hash
		events[i] = e
		out.Events[i] = appendedEvent{ID: e.ID, Version: e.Version}
	}
	if err := s.app.Store.Append(ctx, events...); err != nil {
		if errors.Is(err, eventstore.ErrConcurrency) {
			return s.conflictNow(ctx, id, *expected)
		}
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/streams/%s/events?from=%d", id, *expected))
	etag(w, out.Version)
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// checkGenericName validates an aggregate or event type name of the
// generic API: legal in topic names, and not one of the domain's own.
func (s *Server) checkGenericName(field, name string) error {
	if !namePattern.MatchString(name) {
		return badRequest("%s %q must match %s", field, name, namePattern.String())
	}
	if s.codec.domainType(name) {
		return &httpError{status: http.StatusUnprocessableEntity,
			msg: fmt.Sprintf("%s %q is a type of the domain model; use its command endpoints", field, name)}
	}
	return nil
}

// conflictNow answers a lost race with the stream's version as it is now.
func (s *Server) conflictNow(ctx context.Context, id uuid.UUID, expected uint64) error {
	h, err := s.head(ctx, id)
	if err != nil {
		return err
	}
	return conflict(h.version, "stream %s moved on: it has %d events, expected %d", id, h.version, expected)
}

type readResponse struct {
	StreamID uuid.UUID   `json:"stream_id"`
	Events   []eventJSON `json:"events"`
	NextFrom uint64      `json:"next_from"`
}

// handleReadStream pages through a stream: events with versions >= from,
// at most limit of them, hash chain verified.
func (s *Server) handleReadStream(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	from, _, err := queryUint(r, "from", 0)
	if err != nil {
		return err
	}
	limit, _, err := queryUint(r, "limit", 100)
	if err != nil {
		return err
	}
	if limit == 0 || limit > MaxReadLimit {
		return badRequest("limit must be between 1 and %d", MaxReadLimit)
	}
	// Read the event before the page too, so the page's first event is
	// checked against the hash it links to.
	q := eventstore.StreamQuery{Limit: int(limit)}
	if from > 0 {
		q.Limit++
		if from > 1 {
			after := from - 2
			q.After = &after
		}
	}
	recs, err := s.app.Recorder().ReadStream(r.Context(), id, q)
	if err != nil {
		return err
	}
	events, err := s.codec.decode(recs)
	if err != nil {
		return err
	}
	if len(events) > 0 {
		if _, err := aggregate.VerifyChain(events[0].PreviousHash, events); err != nil {
			return fmt.Errorf("read stream %s: %w", id, err)
		}
	}
	if from > 0 && len(events) > 0 && events[0].Version+1 == from {
		events, recs = events[1:], recs[1:]
	}
	if len(events) == 0 {
		h, err := s.head(r.Context(), id)
		if err != nil {
			return err
		}
		if h.version == 0 {
			return notFound("stream %s has no events", id)
		}
	}
	out := readResponse{StreamID: id, Events: make([]eventJSON, len(events)), NextFrom: from}
	for i, e := range events {
		if out.Events[i], err = toJSON(e); err != nil {
			return err
		}
		out.Events[i].Encrypted = eventstore.Encrypted(recs[i].Data)
		out.NextFrom = e.Version + 1
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type headResponse struct {
	StreamID      uuid.UUID `json:"stream_id"`
	AggregateType string    `json:"aggregate_type"`
	Version       uint64    `json:"version"`
	Hash          string    `json:"hash"`
}

func (s *Server) handleHead(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	h, err := s.head(r.Context(), id)
	if err != nil {
		return err
	}
	if h.last == nil {
		return notFound("stream %s has no events", id)
	}
	etag(w, h.version)
	writeJSON(w, http.StatusOK, headResponse{StreamID: id, AggregateType: h.last.AggregateType, Version: h.version, Hash: h.last.Hash})
	return nil
}

// handleNotifications serves a notification log section in the format of
// application.LogHandler, so an application.RemoteLog pointed at
// /v1/notifications can follow it.
func (s *Server) handleNotifications(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("section")
	if q := r.URL.Query().Get("section"); id == "" {
		id = q
	}
	if id == "" {
		id = "current"
	}
	if id != "current" {
		if _, _, err := application.ParseSectionID(id); err != nil {
			return badRequest("section %q: want \"first,last\" (at most %d ids) or \"current\"", id, application.MaxSectionSize)
		}
	}
	sec, err := s.app.Log.Section(r.Context(), id)
	if errors.Is(err, application.ErrBadSection) {
		return badRequest("%s", err.Error())
	}
	if err != nil {
		return err
	}
	if sec.Items == nil {
		sec.Items = []application.Item{}
	}
	switch r.URL.Query().Get("decode") {
	case "":
		writeJSON(w, http.StatusOK, sec)
		return nil
	case "json":
	default:
		return badRequest("decode=%q: the only decoding offered is decode=json", r.URL.Query().Get("decode"))
	}
	out := decodedSection{ID: sec.ID, Next: sec.Next, Items: make([]decodedItem, len(sec.Items))}
	for i, it := range sec.Items {
		d := decodedItem{Item: it, Encrypted: eventstore.Encrypted(it.Data)}
		if !d.Encrypted {
			es, err := s.codec.decode([]eventstore.Record{it.Record()})
			if err != nil {
				return fmt.Errorf("notification %d: %w", it.ID, err)
			}
			e, err := toJSON(es[0])
			if err != nil {
				return fmt.Errorf("notification %d: %w", it.ID, err)
			}
			d.Type, d.AggregateType, d.Payload = e.Type, e.AggregateType, e.Data
		}
		out.Items[i] = d
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// decodedSection is a notification log section with ?decode=json: each
// item keeps its stored data (base64) and adds, unless the record is
// encrypted at rest, the event's type, aggregate type and JSON payload.
type decodedSection struct {
	ID    string        `json:"id"`
	Items []decodedItem `json:"items"`
	Next  string        `json:"next_id,omitempty"`
}

type decodedItem struct {
	application.Item
	Encrypted     bool            `json:"encrypted"`
	Type          string          `json:"type,omitempty"`
	AggregateType string          `json:"aggregate_type,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
}
