package writer

import (
	"bytes"
	"context"
	"net/http"
	"time"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// recentEvents is how many of the latest notifications the page shows.
const recentEvents = 100

type activity struct {
	Backlog          backlogJSON      `json:"backlog"`
	LastNotification uint64           `json:"last_notification"`
	Streams          []streamActivity `json:"streams"`
}

type backlogJSON struct {
	Messages int64      `json:"messages"`
	Oldest   *time.Time `json:"oldest,omitempty"`
}

type streamActivity struct {
	StreamID      string          `json:"stream_id"`
	AggregateType string          `json:"aggregate_type"`
	Events        []activityEvent `json:"events"`
}

type activityEvent struct {
	Notification uint64    `json:"notification"`
	Type         string    `json:"type"`
	Version      uint64    `json:"version"`
	Time         time.Time `json:"time"`
}

// activity gathers what the page shows: the relay backlog and the latest
// notifications grouped by stream, most recently active stream first.
func (s *Server) activity(ctx context.Context) (activity, error) {
	var out activity
	b, err := s.app.Outbox().Backlog(ctx, outbox.Shard{})
	if err != nil {
		return out, err
	}
	out.Backlog.Messages = b.Messages
	if !b.Oldest.IsZero() {
		out.Backlog.Oldest = &b.Oldest
	}
	last, err := s.app.Recorder().MaxNotificationID(ctx)
	if err != nil {
		return out, err
	}
	out.LastNotification = last
	out.Streams = []streamActivity{}
	if last == 0 {
		return out, nil
	}
	start := uint64(1)
	if last > recentEvents {
		start = last - recentEvents + 1
	}
	ns, err := s.app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: start, Limit: recentEvents})
	if err != nil {
		return out, err
	}
	index := map[string]int{}
	for i := len(ns) - 1; i >= 0; i-- {
		n := ns[i]
		ev := activityEvent{Notification: n.ID, Type: n.Topic, Version: n.Position}
		aggType := "?"
		if es, err := s.codec.decode([]eventstore.Record{n.Record}); err == nil {
			ev.Time, aggType = es[0].Time, es[0].AggregateType
		}
		key := n.StreamID.String()
		j, ok := index[key]
		if !ok {
			j = len(out.Streams)
			index[key] = j
			out.Streams = append(out.Streams, streamActivity{StreamID: key, AggregateType: aggType})
		}
		out.Streams[j].Events = append(out.Streams[j].Events, ev)
	}
	return out, nil
}

func (s *Server) handleActivity(w http.ResponseWriter, r *http.Request) error {
	a, err := s.activity(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, a)
	return nil
}

// handlePage renders the page with the current activity; its script then
// polls /v1/activity.
func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) error {
	a, err := s.activity(r.Context())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := s.page.Execute(&buf, a); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'")
	_, err = w.Write(buf.Bytes())
	return err
}
