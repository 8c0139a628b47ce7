package outbox

import (
	"encoding/json"
	"fmt"
)

// wireHeader is how SQL outbox backends store one header: a JSON array of
// {"key": "...", "value": "<base64>"}, NULL for none.
type wireHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// EncodeHeaders returns the stored form of headers (nil for none).
func EncodeHeaders(hs []Header) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	// Same bytes as json.Marshal of []wireHeader (empty values as ""),
	// without reflection; TestFastEncodeHeadersMatchesJSON holds it to that.
	return fastEncodeHeaders(hs), nil
}

// DecodeHeaders reverses EncodeHeaders.
func DecodeHeaders(b []byte) ([]Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var w []wireHeader
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode headers: %w", err)
	}
	hs := make([]Header, len(w))
	for i, h := range w {
		hs[i] = Header{Key: h.Key, Value: h.Value}
	}
	return hs, nil
}
