package writer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// decodeBody reads the request's JSON body into dst: one JSON value,
// no unknown fields, at most the configured size. Every way it can be
// wrong becomes a client error saying what is wrong.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &httpError{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("content type %q is not application/json", ct)}
		}
	}
	body := http.MaxBytesReader(w, r.Body, s.maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err, s.maxBody)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyError(err, s.maxBody)
		}
		return badRequest("request body holds more than one JSON value")
	}
	return nil
}

func bodyError(err error, limit int64) error {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body exceeds %d bytes", limit)}
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: unexpected end of input")
	case errors.As(err, &syntax):
		return badRequest("malformed JSON at byte %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("request body must be a JSON object, not %s", typ.Value)
		}
		return badRequest("field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return badRequest("malformed JSON: %s", err.Error())
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a non-negative integer"
	case "int", "int8", "int16", "int32", "int64", "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct", "ptr", "pointer":
		return "an object"
	}
	return "of another type"
}

// pathID parses the {id} path value as a UUID.
func pathID(r *http.Request) (uuid.UUID, error) {
	raw := r.PathValue("id")
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return uuid.Nil, badRequest("id %q is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", raw)
	}
	if id == uuid.Nil {
		return uuid.Nil, badRequest("id must not be the nil UUID")
	}
	return id, nil
}

// queryUint parses an optional non-negative integer query parameter.
func queryUint(r *http.Request, name string, def uint64) (uint64, bool, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, false, nil
	}
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, false, badRequest("query parameter %s=%q is not a non-negative integer", name, raw)
	}
	return v, true, nil
}

// expectedVersion combines the body's "expected_version" and the If-Match
// header ("3" or 3); when both are given they must agree.
func expectedVersion(r *http.Request, body *uint64) (*uint64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return body, nil
	}
	v, err := strconv.ParseUint(strings.Trim(h, `"`), 10, 64)
	if err != nil {
		return nil, badRequest("If-Match %q is not a version number", h)
	}
	if body != nil && *body != v {
		return nil, badRequest("If-Match %d and expected_version %d disagree", v, *body)
	}
	return &v, nil
}

// etag is the entity tag of an aggregate at a version: its version.
func etag(w http.ResponseWriter, version uint64) {
	w.Header().Set("ETag", `"`+strconv.FormatUint(version, 10)+`"`)
}
