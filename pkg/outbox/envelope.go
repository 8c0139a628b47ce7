package outbox

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/jsonenc"
	"github.com/esflow/esflow/pkg/aggregate"
)

// Header names set on every published domain event.
const (
	HeaderEventID          = "esflow-event-id"
	HeaderEventType        = "esflow-event-type"
	HeaderAggregateID      = "esflow-aggregate-id"
	HeaderAggregateType    = "esflow-aggregate-type"
	HeaderAggregateVersion = "esflow-aggregate-version"
	HeaderTimestamp        = "esflow-timestamp"
	HeaderCorrelationID    = "esflow-correlation-id"
	HeaderCausationID      = "esflow-causation-id"
	HeaderContentType      = "content-type"

	// ContentTypeJSON marks a value that is an [Envelope] with a plain
	// JSON payload; ContentTypeEncrypted one whose payload stays
	// encrypted (Envelope.Encrypted holds the stored record data).
	ContentTypeJSON      = "application/vnd.esflow.event+json"
	ContentTypeEncrypted = "application/vnd.esflow.event.encrypted+json"
)

// Envelope is the JSON value of a published domain event. Any language can
// read it; consumers deduplicate by event_id or by (aggregate_id,
// aggregate_version), since delivery is at least once.
//
//	{
//	  "event_id": "0b6f…",            // uuid, unique per event
//	  "event_type": "SomethingHappened",
//	  "aggregate_id": "5e1c…",        // also the Kafka key
//	  "aggregate_type": "World",
//	  "aggregate_version": 3,         // 0 for an aggregate's first event
//	  "timestamp": "2026-11-22T05:40:00.123456Z",
//	  "schema_version": 1,            // of the payload's type
//	  "metadata": {"correlation_id": "…", "causation_id": "…", "values": {"traceparent": "…"}},
//	  "previous_hash": "…", "hash": "…", // SHA-256 chain, hex
//	  "payload": {"what": "dinosaurs"}   // or "encrypted": "<base64>" when kept encrypted
//	}
type Envelope struct {
	EventID          uuid.UUID           `json:"event_id"`
	EventType        string              `json:"event_type"`
	AggregateID      uuid.UUID           `json:"aggregate_id"`
	AggregateType    string              `json:"aggregate_type"`
	AggregateVersion uint64              `json:"aggregate_version"`
	Timestamp        time.Time           `json:"timestamp"`
	SchemaVersion    int                 `json:"schema_version"`
	Metadata         *aggregate.Metadata `json:"metadata,omitempty"`
	PreviousHash     string              `json:"previous_hash,omitempty"`
	Hash             string              `json:"hash,omitempty"`
	Payload          json.RawMessage     `json:"payload,omitempty"`
	Encrypted        []byte              `json:"encrypted,omitempty"`
}

// Router chooses the topic of each event. Event-type routes win over
// aggregate-type routes; anything else goes to Prefix + aggregate type.
type Router struct {
	// Prefix of the default topic names. Default "esflow.", giving
	// "esflow.World".
	Prefix string
	// AggregateTopics routes all events of an aggregate type.
	AggregateTopics map[string]string
	// EventTopics routes events of one type.
	EventTopics map[string]string
}

// Topic returns the topic for an event, or an error matching ErrUnroutable
// when the result is not a legal Kafka topic name.
func (r Router) Topic(e aggregate.Event) (string, error) {
	topic, ok := r.EventTopics[e.Type]
	if !ok {
		topic, ok = r.AggregateTopics[e.AggregateType]
	}
	if !ok {
		prefix := r.Prefix
		if prefix == "" {
			prefix = "esflow."
		}
		topic = prefix + e.AggregateType
	}
	if !legalTopic(topic) {
		return "", fmt.Errorf("%w: event %s of %q: topic %q is not a legal Kafka topic name", ErrUnroutable, e.Type, e.AggregateType, topic)
	}
	return topic, nil
}

// legalTopic reports whether s is a legal Kafka topic name: 1 to 249 of
// [a-zA-Z0-9._-], and not "." or "..". (A loop, not a regexp: every
// saved event's topic is checked.)
func legalTopic(s string) bool {
	if len(s) == 0 || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Builder turns domain events into outbox messages. The event store calls
// it for every append when the outbox is enabled.
type Builder struct {
	Router Router
	// Registry supplies payload schema versions (1 when nil).
	Registry *aggregate.Registry
	// KeepEncrypted publishes the stored, encrypted record data instead of
	// the plain payload: for topics that are not trusted with plaintext.
	// Without encryption at rest it has no effect.
	KeepEncrypted bool
}

// Messages returns one message per event. stored[i] is event i's stored
// record data and encrypted tells whether that data is encrypted (then
// it is what KeepEncrypted publishes).
func (b *Builder) Messages(events []aggregate.Event, stored [][]byte, encrypted bool) ([]Message, error) {
	msgs := make([]Message, len(events))
	for i, e := range events {
		var data []byte
		if b.KeepEncrypted && encrypted {
			data = stored[i]
		}
		m, err := b.Message(e, nil, data, encrypted)
		if err != nil {
			return nil, err
		}
		msgs[i] = m
	}
	return msgs, nil
}

// Message returns the message of one event. payload, when not nil, must
// be aggregate.MarshalPayload(e.Payload): the event store passes the
// bytes it has just encoded and hashed, so the payload is not encoded a
// second time; nil encodes it here. stored and encrypted are the event's
// stored record data and whether it is encrypted, as for [Builder.Messages].
func (b *Builder) Message(e aggregate.Event, payload, stored []byte, encrypted bool) (Message, error) {
	topic, err := b.Router.Topic(e)
	if err != nil {
		return Message{}, err
	}
	env := Envelope{
		EventID: e.ID, EventType: e.Type, AggregateID: e.AggregateID, AggregateType: e.AggregateType,
		AggregateVersion: e.Version, Timestamp: e.Time.UTC(), SchemaVersion: 1,
		PreviousHash: e.PreviousHash, Hash: e.Hash,
	}
	if b.Registry != nil {
		env.SchemaVersion = max(b.Registry.CurrentVersion(e.Type), 1)
	}
	if e.Metadata.CorrelationID != "" || e.Metadata.CausationID != "" || len(e.Metadata.Values) > 0 {
		md := e.Metadata
		env.Metadata = &md
	}
	contentType := ContentTypeJSON
	switch {
	case b.KeepEncrypted && encrypted:
		env.Encrypted = stored
		contentType = ContentTypeEncrypted
	case payload != nil:
		env.Payload = payload
	default:
		if env.Payload, err = aggregate.MarshalPayload(e.Payload); err != nil {
			return Message{}, err
		}
	}
	value, err := marshalEnvelope(&env)
	if err != nil {
		return Message{}, fmt.Errorf("outbox: encode envelope: %w", err)
	}
	// The header values and the key share one allocation; each is capped
	// at its own length, so appending to one cannot overwrite another.
	buf := make([]byte, 0, 2*36+len(e.Type)+len(e.AggregateType)+20+len(timeLayoutMax)+len(contentType))
	field := func(from int) []byte { return buf[from:len(buf):len(buf)] }
	n := len(buf)
	buf = jsonenc.AppendUUID(buf, e.ID)
	eventID := field(n)
	n = len(buf)
	buf = append(buf, e.Type...)
	eventType := field(n)
	n = len(buf)
	buf = jsonenc.AppendUUID(buf, e.AggregateID)
	key := field(n)
	n = len(buf)
	buf = append(buf, e.AggregateType...)
	aggType := field(n)
	n = len(buf)
	buf = strconv.AppendUint(buf, e.Version, 10)
	version := field(n)
	n = len(buf)
	buf = env.Timestamp.AppendFormat(buf, aggregate.TimeFormat)
	ts := field(n)
	n = len(buf)
	buf = append(buf, contentType...)
	ct := field(n)

	// Metadata values published as headers of their own.
	traceHeaders := [...]string{"traceparent", "tracestate", "baggage"}
	extra := 0
	if e.Metadata.CorrelationID != "" {
		extra++
	}
	if e.Metadata.CausationID != "" {
		extra++
	}
	for _, k := range traceHeaders {
		if _, ok := e.Metadata.Values[k]; ok {
			extra++
		}
	}
	headers := make([]Header, 7, 7+extra)
	headers[0] = Header{HeaderEventID, eventID}
	headers[1] = Header{HeaderEventType, eventType}
	headers[2] = Header{HeaderAggregateID, key}
	headers[3] = Header{HeaderAggregateType, aggType}
	headers[4] = Header{HeaderAggregateVersion, version}
	headers[5] = Header{HeaderTimestamp, ts}
	headers[6] = Header{HeaderContentType, ct}
	if e.Metadata.CorrelationID != "" {
		headers = append(headers, Header{HeaderCorrelationID, []byte(e.Metadata.CorrelationID)})
	}
	if e.Metadata.CausationID != "" {
		headers = append(headers, Header{HeaderCausationID, []byte(e.Metadata.CausationID)})
	}
	for _, k := range traceHeaders {
		if v, ok := e.Metadata.Values[k]; ok {
			headers = append(headers, Header{k, []byte(v)})
		}
	}
	return Message{Topic: topic, Key: key, Value: value, Headers: headers}, nil
}

// timeLayoutMax is as long as the longest timestamp aggregate.TimeFormat
// writes for years 0–9999 (a buffer size hint).
const timeLayoutMax = "2006-01-02T15:04:05.999999999-07:00"

// DecodeEnvelope parses a published value.
func DecodeEnvelope(value []byte) (Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil {
		return Envelope{}, fmt.Errorf("outbox: decode envelope: %w", err)
	}
	if env.EventID == uuid.Nil || env.AggregateID == uuid.Nil || env.EventType == "" {
		return Envelope{}, fmt.Errorf("outbox: decode envelope: missing event_id, aggregate_id or event_type")
	}
	return env, nil
}
