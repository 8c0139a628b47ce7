package postgres

import (
	"log/slog"
	"sync"
	"time"
)

// LogHooks returns [Hooks] that log the sequencer's life to logger: taking
// and losing the table's sequencer lock at Info, failures at Warn (at most
// one per operation every 10 s, with the count of those left out, so a
// database outage does not flood the log). Steps are not logged.
func LogHooks(logger *slog.Logger, table string) Hooks {
	return &logHooks{log: logger.With("component", "sequencer", "table", table), last: map[string]time.Time{}, muted: map[string]int{}}
}

type logHooks struct {
	NoHooks
	log *slog.Logger

	mu    sync.Mutex
	last  map[string]time.Time
	muted map[string]int
}

func (h *logHooks) SequencerActive(active bool) {
	if active {
		h.log.Info("sequencer active: this process numbers the notification log")
	} else {
		h.log.Info("sequencer stopped numbering (lock released or session lost)")
	}
}

func (h *logHooks) Failed(op string, err error) {
	h.mu.Lock()
	now := time.Now()
	if now.Sub(h.last[op]) < 10*time.Second {
		h.muted[op]++
		h.mu.Unlock()
		return
	}
	h.last[op] = now
	muted := h.muted[op]
	h.muted[op] = 0
	h.mu.Unlock()
	h.log.Warn("sequencer failed; retrying", "op", op, "err", err, "suppressed", muted)
}
