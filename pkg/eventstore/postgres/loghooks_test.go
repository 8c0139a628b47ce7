package postgres_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/esflow/esflow/pkg/eventstore/postgres"
)

func TestLogHooksRateLimitFailures(t *testing.T) {
	var buf bytes.Buffer
	h := postgres.LogHooks(slog.New(slog.NewTextHandler(&buf, nil)), "events")
	h.SequencerActive(true)
	for range 5 {
		h.Failed("sequence", errors.New("connection refused"))
	}
	h.Failed("lock", errors.New("too many connections"))
	out := buf.String()
	if got := strings.Count(out, "sequencer failed"); got != 2 {
		t.Fatalf("%d failure lines, want 2 (one per operation in 10 s):\n%s", got, out)
	}
	if !strings.Contains(out, "sequencer active") || !strings.Contains(out, "table=events") {
		t.Fatalf("missing activity line or table:\n%s", out)
	}
}
