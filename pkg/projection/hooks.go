package projection

import "time"

// Hooks observe a runner. Implementations must be safe for concurrent
// use and fast: they are called on the apply path. Embed [NoHooks] to
// implement only some of them.
type Hooks interface {
	// Applied reports a committed batch of n applied events and the age
	// of its newest event (now - event timestamp).
	Applied(n int, lag time.Duration)
	// Duplicate reports an event skipped because its version was applied.
	Duplicate()
	// Gap reports an event held back because an earlier version is missing.
	Gap()
	// DeadLettered reports a message written to the dead-letter topic.
	DeadLettered()
	// Failed reports an error of operation op ("fetch", "apply", "commit",
	// "dead-letter", "handle") that the runner retries or survives.
	Failed(op string, err error)
}

// NoHooks implements Hooks with no-ops.
type NoHooks struct{}

// Applied implements Hooks.
func (NoHooks) Applied(int, time.Duration) {}

// Duplicate implements Hooks.
func (NoHooks) Duplicate() {}

// Gap implements Hooks.
func (NoHooks) Gap() {}

// DeadLettered implements Hooks.
func (NoHooks) DeadLettered() {}

// Failed implements Hooks.
func (NoHooks) Failed(string, error) {}

// JoinHooks returns hooks that call each of hs in turn (nil ones are
// left out): for example metrics and a caller's own hooks.
func JoinHooks(hs ...Hooks) Hooks {
	var out joined
	for _, h := range hs {
		if h != nil {
			out = append(out, h)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return out
}

type joined []Hooks

func (j joined) Applied(n int, lag time.Duration) {
	for _, h := range j {
		h.Applied(n, lag)
	}
}

func (j joined) Duplicate() {
	for _, h := range j {
		h.Duplicate()
	}
}

func (j joined) Gap() {
	for _, h := range j {
		h.Gap()
	}
}

func (j joined) DeadLettered() {
	for _, h := range j {
		h.DeadLettered()
	}
}

func (j joined) Failed(op string, err error) {
	for _, h := range j {
		h.Failed(op, err)
	}
}
