package outbox

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/esflow/esflow/internal/jsonenc"
)

// marshalEnvelope returns exactly json.Marshal(env) (a test holds it to
// that). Every saved event's message is encoded here, and reflection plus
// re-validating the payload made json.Marshal the largest client cost of
// a save (39% of its CPU at 100 events per transaction). The payload is
// not re-validated: it comes from aggregate.MarshalPayload (the Builder's
// own call, or the event store's, see Builder.Message), so it is compact,
// valid and HTML-escaped already. Anything unusual (a timestamp
// outside years 0–9999) goes through json.Marshal.
func marshalEnvelope(env *Envelope) ([]byte, error) {
	if y := env.Timestamp.Year(); y < 0 || y > 9999 {
		return json.Marshal(env)
	}
	b := make([]byte, 0, 320+len(env.Payload)+base64.StdEncoding.EncodedLen(len(env.Encrypted)))
	b = append(b, `{"event_id":"`...)
	b = jsonenc.AppendUUID(b, env.EventID)
	b = append(b, `","event_type":`...)
	b = jsonenc.AppendString(b, env.EventType)
	b = append(b, `,"aggregate_id":"`...)
	b = jsonenc.AppendUUID(b, env.AggregateID)
	b = append(b, `","aggregate_type":`...)
	b = jsonenc.AppendString(b, env.AggregateType)
	b = append(b, `,"aggregate_version":`...)
	b = strconv.AppendUint(b, env.AggregateVersion, 10)
	b = append(b, `,"timestamp":"`...)
	b = env.Timestamp.AppendFormat(b, "2006-01-02T15:04:05.999999999Z07:00")
	b = append(b, `","schema_version":`...)
	b = strconv.AppendInt(b, int64(env.SchemaVersion), 10)
	if env.Metadata != nil {
		md, err := json.Marshal(env.Metadata)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"metadata":`...), md...)
	}
	if env.PreviousHash != "" {
		b = append(b, `,"previous_hash":`...)
		b = jsonenc.AppendString(b, env.PreviousHash)
	}
	if env.Hash != "" {
		b = append(b, `,"hash":`...)
		b = jsonenc.AppendString(b, env.Hash)
	}
	if len(env.Payload) > 0 {
		b = append(append(b, `,"payload":`...), env.Payload...)
	}
	if len(env.Encrypted) > 0 {
		b = append(b, `,"encrypted":"`...)
		b = base64.StdEncoding.AppendEncode(b, env.Encrypted)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}
