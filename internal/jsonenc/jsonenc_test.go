package jsonenc

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

func TestMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<html>&", "tab\t", "ünï", "\x7f", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
	id := uuid.New()
	if got := AppendUUID(nil, id); string(got) != id.String() {
		t.Errorf("AppendUUID = %s, want %s", got, id)
	}
}
