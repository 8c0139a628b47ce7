package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/esflow/esflow/pkg/outbox"
)

// Publisher sends messages to the broker. Publish returns only when every
// message was acknowledged by all in-sync replicas, or with an error.
//
// Implementations must send messages with the same key to the same
// partition in slice order, and must never have two unacknowledged batches
// for one partition in flight: the relay's ordering argument rests on it
// (see DESIGN.md). kafkapub returns early when ctx ends, but then makes the
// next Publish wait until the abandoned messages are settled, which keeps
// that property at the price of possible duplicates. (The relay passes a
// context that outlives shutdown by PublishTimeout, so this only happens
// on timeouts.)
type Publisher interface {
	Publish(ctx context.Context, msgs []outbox.Message) error
}

// ErrPermanent marks a failure that retrying cannot fix (message too
// large, invalid topic, topic missing with auto-creation off). The relay
// parks such messages instead of retrying them forever.
var ErrPermanent = errors.New("relay: permanent publish failure")

// BatchError reports per-message outcomes of a failed Publish: Errs[i] is
// nil when message i was acknowledged. A Publisher that cannot tell
// returns a plain error, and the relay retries the whole batch.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	failed, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	return fmt.Sprintf("relay: %d of %d messages failed: %v", failed, len(e.Errs), first)
}

// Unwrap returns the distinct failures, so errors.Is(err, ErrPermanent)
// holds when any message failed permanently.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}
