package relay

import (
	"context"

	"github.com/esflow/esflow/pkg/outbox"
)

// ExceptFetcher is an optional extension of [outbox.Source]. The relay
// fetches its next batch while the current one is being published, so
// that batch's rows are still in the outbox and must be skipped. A Source
// that implements ExceptFetcher skips them itself; for any other the
// relay fetches limit+len(except) messages and drops the skipped ones.
type ExceptFetcher interface {
	// FetchExcept returns up to limit unpublished messages of the shard
	// whose ids are not in except (ascending), lowest id first.
	FetchExcept(ctx context.Context, shard outbox.Shard, limit int, except []int64) ([]outbox.Message, error)
}
