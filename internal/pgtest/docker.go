package pgtest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

var errNoDocker = errors.New("no Docker engine")

// dockerImage is the image used when no local binaries exist.
const dockerImage = "postgres:16-alpine"

// startDocker runs PostgreSQL in a container. Testcontainers' reaper
// removes the container if this process dies.
func startDocker(ctx context.Context) (s *server, err error) {
	// Testcontainers may panic when no Docker host can be found; turn that
	// into the "not available" error.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %v", errNoDocker, r)
		}
	}()
	if err := dockerHealthy(ctx); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoDocker, err)
	}
	ctr, err := tcpostgres.Run(ctx, dockerImage,
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithCmd("postgres",
			"-c", "fsync=off",
			"-c", "synchronous_commit=off",
			"-c", "full_page_writes=off",
			"-c", "max_connections=200",
			"-c", "wal_level=logical",
			"-c", "max_replication_slots=64",
			"-c", "max_wal_senders=64",
		),
	)
	stop := func() error {
		if ctr == nil {
			return nil
		}
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			return fmt.Errorf("terminate postgres container: %w", err)
		}
		return nil
	}
	if err != nil {
		_ = stop()
		return nil, fmt.Errorf("start postgres container: %w", err)
	}
	dsn, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = stop()
		return nil, fmt.Errorf("postgres container connection string: %w", err)
	}
	return &server{adminDSN: dsn, stop: stop}, nil
}

// dockerHealthy reports whether a Docker engine answers.
func dockerHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	return provider.Health(ctx)
}
