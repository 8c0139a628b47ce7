package outbox

import (
	"context"
	"errors"
	"time"
)

// ErrFenced reports that a relay no longer holds its shard for certain:
// its lease ran out (it was paused, or could not renew it), so another
// replica may own the shard. Work done under the lease must stop.
var ErrFenced = errors.New("outbox: shard lease expired (fenced)")

// Fence answers, without any I/O, whether a shard's lease is still held
// for certain. Relays check it immediately before every produce request,
// so a replica that was paused while it held a batch does not publish it
// after its successor published later messages of the same keys.
type Fence interface {
	// Check returns nil while the lease is certainly held, and an error
	// matching [ErrFenced] from the moment another replica may hold it.
	Check() error
	// Deadline is the instant Check starts failing unless the lease is
	// renewed meanwhile.
	Deadline() time.Time
}

// FencedLocker is a [Locker] whose ownership is a lease with a fence: a
// successor takes over only after the previous lease expired, and the
// holder's Fence fails before that moment.
type FencedLocker interface {
	Locker
	// LockFenced is Lock, returning the lease's Fence as well.
	LockFenced(ctx context.Context, shard Shard) (fence Fence, lost <-chan struct{}, release func(), err error)
}
