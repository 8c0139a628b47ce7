package relay

import (
	"context"

	"github.com/esflow/esflow/pkg/outbox"
)

type fenceKey struct{}

// WithFence returns a context carrying f: a [Publisher] given it calls
// [CheckFence] immediately before each produce request it sends, and
// sends nothing once the fence failed. The relay passes its lease's
// fence this way (see DESIGN.md, "Fencing").
func WithFence(ctx context.Context, f outbox.Fence) context.Context {
	if f == nil {
		return ctx
	}
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence ctx carries, or nil.
func FenceFrom(ctx context.Context) outbox.Fence {
	f, _ := ctx.Value(fenceKey{}).(outbox.Fence)
	return f
}

// CheckFence returns nil when ctx carries no fence or its fence holds,
// and an error matching [outbox.ErrFenced] otherwise.
func CheckFence(ctx context.Context) error {
	if f := FenceFrom(ctx); f != nil {
		return f.Check()
	}
	return nil
}
