package eventstore

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/jsonenc"
	"github.com/esflow/esflow/pkg/aggregate"
)

// Mapper turns domain events into records and back: JSON envelope, then
// optional compression, then optional encryption (compress before
// encrypting: ciphertext does not compress).
//
// Plain data is the JSON envelope itself, readable in the database:
//
//	{"id":"…","aggregate_type":"World","schema":1,"time":"…",
//	 "previous_hash":"…","hash":"…","payload":{"what":"dinosaurs"}}
//
// Compressed or encrypted data starts with the 5-byte frame header
// 0x00 'E' 'S' 0x01 flags, which no JSON document starts with, so a store
// can hold both (for example after encryption is switched on).
type Mapper struct {
	Registry *aggregate.Registry
	// Cipher, when set, encrypts every record written and is required to
	// read encrypted records.
	Cipher *Cipher
	// Compress deflates the envelope before encryption.
	Compress bool
	// MaxDataSize rejects events whose stored data would exceed it with
	// ErrTooLarge; 0 means 1 MiB, negative means no limit.
	MaxDataSize int
}

const (
	frameCompressed byte = 1 << 0
	frameEncrypted  byte = 1 << 1
	frameHeaderLen       = 5
)

var frameMagic = []byte{0x00, 'E', 'S', 0x01}

// Encrypted reports whether stored record data is encrypted at rest (its
// frame header says so), without the key.
func Encrypted(data []byte) bool {
	return len(data) >= frameHeaderLen && bytes.Equal(data[:len(frameMagic)], frameMagic) && data[len(frameMagic)]&frameEncrypted != 0
}

type envelope struct {
	ID            uuid.UUID           `json:"id"`
	AggregateType string              `json:"aggregate_type,omitempty"`
	Schema        int                 `json:"schema,omitempty"`
	Time          string              `json:"time"`
	Metadata      *aggregate.Metadata `json:"metadata,omitempty"`
	PreviousHash  string              `json:"previous_hash,omitempty"`
	Hash          string              `json:"hash,omitempty"`
	Payload       json.RawMessage     `json:"payload"`
}

// Encode maps an event to its record. The event's type must be registered
// (else ErrUnknownEventType) and, when the event is sealed, its payload
// must still hash to e.Hash (else ErrIntegrity: it was changed after it
// was triggered).
func (m *Mapper) Encode(e aggregate.Event) (Record, error) {
	r, _, err := m.encode(e)
	return r, err
}

// encode is Encode that also returns the payload's JSON (the bytes the
// record holds and the hash covers), for the outbox message.
func (m *Mapper) encode(e aggregate.Event) (Record, []byte, error) {
	fail := func(err error) (Record, []byte, error) {
		return Record{}, nil, &Error{Op: "encode", StreamID: e.AggregateID, Position: e.Version, Err: err}
	}
	if e.Type == "" {
		e.Type = aggregate.TypeName(e.Payload)
	}
	version := m.Registry.CurrentVersion(e.Type)
	if version == 0 {
		return fail(fmt.Errorf("%w: %q (register it with aggregate.Register)", ErrUnknownEventType, e.Type))
	}
	payload, err := aggregate.MarshalPayload(e.Payload)
	if err != nil {
		return fail(err)
	}
	if e.Hash != "" && aggregate.HashEvent(e, payload) != e.Hash {
		return fail(fmt.Errorf("%w: payload of %s no longer matches its hash (changed after it was triggered?)", ErrIntegrity, e.Type))
	}
	env := envelope{
		ID: e.ID, AggregateType: e.AggregateType, Schema: version,
		Time:         e.Time.UTC().Format(aggregate.TimeFormat),
		PreviousHash: e.PreviousHash, Hash: e.Hash, Payload: payload,
	}
	if e.Metadata.CorrelationID != "" || e.Metadata.CausationID != "" || len(e.Metadata.Values) > 0 {
		md := e.Metadata
		env.Metadata = &md
	}
	body, err := env.appendJSON(make([]byte, 0, 256+len(payload)))
	if err != nil {
		return fail(err)
	}
	r := Record{StreamID: e.AggregateID, Position: e.Version, Topic: e.Type}
	if r.Data, err = m.seal(body, r); err != nil {
		return fail(err)
	}
	return r, payload, nil
}

// Decode maps a record back to its event: it decrypts and decompresses,
// verifies the event's own hash over the stored payload bytes, and decodes
// the payload through the registry (upcasting old versions).
func (m *Mapper) Decode(r Record) (aggregate.Event, error) {
	fail := func(err error) (aggregate.Event, error) {
		return aggregate.Event{}, &Error{Op: "decode", StreamID: r.StreamID, Position: r.Position, Err: err}
	}
	body, err := m.open(r)
	if err != nil {
		return fail(err)
	}
	var env envelope
	if decodeEnvelopeFast(body, &env) {
		// Accepted only when everything succeeds, the payload's JSON
		// decode included (see decodeEnvelopeFast); any failure is
		// decoded again below so the error is encoding/json's.
		if e, err := m.event(r, &env); err == nil {
			return e, nil
		}
		env = envelope{}
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fail(fmt.Errorf("%w: envelope: %v", ErrIntegrity, err))
	}
	e, err := m.event(r, &env)
	if err != nil {
		return fail(err)
	}
	return e, nil
}

// event builds the event of record r from its decoded envelope, checking
// its hash.
func (m *Mapper) event(r Record, env *envelope) (aggregate.Event, error) {
	e, err := verified(r, env)
	if err != nil {
		return aggregate.Event{}, err
	}
	if e.Payload, err = m.Registry.Decode(r.Topic, env.Schema, env.Payload); err != nil {
		return aggregate.Event{}, err
	}
	return e, nil
}

// verified builds the event of record r from its decoded envelope,
// without its payload, and checks its hash over the stored payload bytes.
func verified(r Record, env *envelope) (aggregate.Event, error) {
	t, err := time.Parse(aggregate.TimeFormat, env.Time)
	if err != nil {
		return aggregate.Event{}, fmt.Errorf("%w: time: %v", ErrIntegrity, err)
	}
	e := aggregate.Event{
		ID: env.ID, AggregateID: r.StreamID, AggregateType: env.AggregateType, Version: r.Position,
		Type: r.Topic, Time: t, PreviousHash: env.PreviousHash, Hash: env.Hash,
	}
	if env.Metadata != nil {
		e.Metadata = *env.Metadata
	}
	if env.Hash != "" && aggregate.HashEvent(e, env.Payload) != env.Hash {
		return aggregate.Event{}, fmt.Errorf("%w: event hash does not match its content (tampered record?)", ErrIntegrity)
	}
	return e, nil
}

// DecodeRaw is Decode for a reader that has no Go types for the events
// (an operator's tool, a generic stream): it decrypts, decompresses and
// verifies the event's own hash like Decode, and returns the payload as
// its JSON (a json.RawMessage), upcast to the current schema version when
// the registry knows the type, else as stored.
func (m *Mapper) DecodeRaw(r Record) (aggregate.Event, error) {
	fail := func(err error) (aggregate.Event, error) {
		return aggregate.Event{}, &Error{Op: "decode", StreamID: r.StreamID, Position: r.Position, Err: err}
	}
	body, err := m.open(r)
	if err != nil {
		return fail(err)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return fail(fmt.Errorf("%w: envelope: %v", ErrIntegrity, err))
	}
	e, err := verified(r, &env)
	if err != nil {
		return fail(err)
	}
	payload := []byte(env.Payload)
	if m.Registry != nil {
		if payload, err = m.Registry.Upcast(r.Topic, env.Schema, payload); err != nil {
			return fail(err)
		}
	}
	e.Payload = json.RawMessage(payload)
	return e, nil
}

// appendJSON appends exactly what json.Marshal(env) returns (a test
// holds it to that), without reflection and without re-validating the
// payload: it comes from json.Marshal, so it is compact, valid and
// HTML-escaped already. Every save encodes every event, so this is on
// the hot path.
func (env *envelope) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"id":"`...)
	b = jsonenc.AppendUUID(b, env.ID)
	b = append(b, '"')
	if env.AggregateType != "" {
		b = append(b, `,"aggregate_type":`...)
		b = jsonenc.AppendString(b, env.AggregateType)
	}
	if env.Schema != 0 {
		b = append(b, `,"schema":`...)
		b = strconv.AppendInt(b, int64(env.Schema), 10)
	}
	b = append(b, `,"time":`...)
	b = jsonenc.AppendString(b, env.Time)
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
	b = append(b, `,"payload":`...)
	if len(env.Payload) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, env.Payload...)
	}
	return append(b, '}'), nil
}

// associatedData binds a ciphertext to the row it was written for.
func associatedData(r Record) []byte {
	ad := make([]byte, 0, 16+8+len(r.Topic))
	ad = append(ad, r.StreamID[:]...)
	ad = binary.BigEndian.AppendUint64(ad, r.Position)
	return append(ad, r.Topic...)
}

func (m *Mapper) seal(body []byte, r Record) ([]byte, error) {
	limit := m.MaxDataSize
	if limit == 0 {
		limit = 1 << 20
	}
	if m.Compress || m.Cipher != nil {
		var flags byte
		if m.Compress {
			var err error
			if body, err = deflate(body); err != nil {
				return nil, err
			}
			flags |= frameCompressed
		}
		if m.Cipher != nil {
			var err error
			if body, err = m.Cipher.Encrypt(body, associatedData(r)); err != nil {
				return nil, err
			}
			flags |= frameEncrypted
		}
		body = append(append(append(make([]byte, 0, frameHeaderLen+len(body)), frameMagic...), flags), body...)
	}
	if limit > 0 && len(body) > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(body), limit)
	}
	return body, nil
}

func (m *Mapper) open(r Record) ([]byte, error) {
	data := r.Data
	if !bytes.HasPrefix(data, frameMagic) || len(data) < frameHeaderLen {
		return data, nil
	}
	flags := data[len(frameMagic)]
	body := data[frameHeaderLen:]
	if flags&frameEncrypted != 0 {
		if m.Cipher == nil {
			return nil, fmt.Errorf("%w: record is encrypted and no cipher key is configured (set CIPHER_KEY)", ErrCipher)
		}
		var err error
		if body, err = m.Cipher.Decrypt(body, associatedData(r)); err != nil {
			return nil, err
		}
	}
	if flags&frameCompressed != 0 {
		b, err := inflate(body)
		if err != nil {
			return nil, fmt.Errorf("%w: decompress: %v", ErrIntegrity, err)
		}
		body = b
	}
	return body, nil
}

// Deflate state is large (a writer allocates ~800 KB, a reader ~40 KB),
// so it is reused across records instead of made per record: encoding a
// compressed record cost 138 µs and 816 KB with a new writer each time
// (BenchmarkMapRecord). The pools hold no data between uses: a writer
// or reader is Reset onto the next record before it is used.
var (
	flateWriters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.DefaultCompression) // the level is valid: no error
		return w
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}
)

// deflate compresses body.
func deflate(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(body)/2 + 64)
	w := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// inflate decompresses body, refusing more than 64 MiB of output.
func inflate(body []byte) ([]byte, error) {
	r := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(body), nil); err != nil {
		return nil, err
	}
	out := bytes.NewBuffer(make([]byte, 0, 4*len(body)+64))
	if _, err := out.ReadFrom(io.LimitReader(r, 64<<20)); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
