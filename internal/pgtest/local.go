package pgtest

import (
	"context"

	"github.com/esflow/esflow/internal/pgcluster"
)

// dirPrefix names the temporary directories of pgtest clusters, so that a
// test process can reap those of dead ones.
const dirPrefix = "esflow-pgtest-"

// speedSettings trade durability for speed: a test cluster is thrown
// away, so nothing needs to survive a crash.
var speedSettings = []string{
	"fsync=off",
	"synchronous_commit=off",
	"full_page_writes=off",
	"max_connections=200",
	"shared_buffers=128MB",
	// The WAL-mode outbox decodes logical messages from a replication
	// slot: every test cluster can run it. Each test database may hold a
	// slot and a walsender.
	"wal_level=logical",
	"max_replication_slots=64",
	"max_wal_senders=64",
}

// startLocal removes clusters left behind by dead test processes, then
// initialises and starts a throwaway cluster of this process.
func startLocal(ctx context.Context) (*server, error) {
	pgcluster.ReapStale(dirPrefix)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: speedSettings, DirPrefix: dirPrefix})
	if err != nil {
		return nil, err
	}
	return &server{adminDSN: c.URL(), stop: c.Close}, nil
}
