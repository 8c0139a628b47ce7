package kafkapub

import (
	"github.com/segmentio/kafka-go/protocol"

	"github.com/esflow/esflow/pkg/outbox"
)

// CloudEvents configures the CloudEvents attributes the Publisher writes
// next to the esflow-* headers: the CloudEvents Kafka protocol binding in
// binary mode (CloudEvents 1.0), so that a CloudEvents consumer reads an
// esflow message as an event without knowing esflow's headers:
//
//	ce_specversion  "1.0"
//	ce_id           the event id (esflow-event-id)
//	ce_source       Source
//	ce_type         the event type (esflow-event-type)
//	ce_time         the event's time, RFC 3339 (esflow-timestamp)
//	ce_subject      the aggregate id (esflow-aggregate-id, also the key)
//	content-type    already written: the envelope's media type, the
//	                binding's datacontenttype
//
// The value stays the esflow envelope (package outbox): the event's data
// in CloudEvents terms. The attributes are derived from the message's
// esflow-* headers as it is sent, so they cost no outbox space, and rows
// written before they were enabled get them too. A message without an
// esflow-event-id header (not a domain event) is sent without them.
type CloudEvents struct {
	// Disabled turns the ce_* headers off.
	Disabled bool
	// Source is ce_source, a URI reference naming the producer (the
	// service or context the events come from). Default
	// DefaultCloudEventsSource.
	Source string
}

// DefaultCloudEventsSource is CloudEvents.Source's default.
const DefaultCloudEventsSource = "esflow"

// The CloudEvents Kafka binding's header names (binary mode).
const (
	HeaderCESpecVersion = "ce_specversion"
	HeaderCEID          = "ce_id"
	HeaderCESource      = "ce_source"
	HeaderCEType        = "ce_type"
	HeaderCETime        = "ce_time"
	HeaderCESubject     = "ce_subject"
)

// ceHeaders is how many headers appendCloudEvents adds at most.
const ceHeaders = 6

var specVersion = []byte("1.0")

// source returns ce_source's bytes, nil when the headers are
// off.
func (c CloudEvents) source() []byte {
	if c.Disabled {
		return nil
	}
	if c.Source == "" {
		return []byte(DefaultCloudEventsSource)
	}
	return []byte(c.Source)
}

// appendCloudEvents appends m's ce_* headers to hs, their values aliasing
// m's esflow-* header values (nothing is copied). source is ce_source;
// nil appends nothing.
func appendCloudEvents(hs []protocol.Header, m *outbox.Message, source []byte) []protocol.Header {
	if source == nil {
		return hs
	}
	var id, typ, ts, subject []byte
	for _, h := range m.Headers {
		switch h.Key {
		case outbox.HeaderEventID:
			id = h.Value
		case outbox.HeaderEventType:
			typ = h.Value
		case outbox.HeaderTimestamp:
			ts = h.Value
		case outbox.HeaderAggregateID:
			subject = h.Value
		}
	}
	if id == nil || typ == nil {
		return hs
	}
	hs = append(hs,
		protocol.Header{Key: HeaderCESpecVersion, Value: specVersion},
		protocol.Header{Key: HeaderCEID, Value: id},
		protocol.Header{Key: HeaderCESource, Value: source},
		protocol.Header{Key: HeaderCEType, Value: typ},
	)
	if ts != nil {
		hs = append(hs, protocol.Header{Key: HeaderCETime, Value: ts})
	}
	if subject != nil {
		hs = append(hs, protocol.Header{Key: HeaderCESubject, Value: subject})
	}
	return hs
}

// cloudEventsSize bounds what appendCloudEvents adds to a message's size
// as messageSize counts it.
func cloudEventsSize(m *outbox.Message, source []byte) int {
	if source == nil {
		return 0
	}
	n := 0
	for _, h := range m.Headers {
		switch h.Key {
		case outbox.HeaderEventID, outbox.HeaderEventType, outbox.HeaderTimestamp, outbox.HeaderAggregateID:
			n += 10 + len(h.Key) + len(h.Value) // ce_ names are no longer than the esflow- ones
		}
	}
	return n + 10 + len(HeaderCESpecVersion) + len(specVersion) + 10 + len(HeaderCESource) + len(source)
}
