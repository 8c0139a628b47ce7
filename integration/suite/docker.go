package suite

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Images of the container path.
const (
	postgresImage = "postgres:16-alpine"
	kafkaImage    = "apache/kafka:3.9.1"
)

// fixedPort binds the container port to a fixed loopback host port, so a
// stopped and started container comes back on the same address (the
// services keep their connection strings; Kafka keeps the address it
// advertises).
func fixedPort(containerPort string, hostPort int) testcontainers.CustomizeRequestOption {
	return testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
		p := network.MustParsePort(containerPort)
		if hc.PortBindings == nil {
			hc.PortBindings = network.PortMap{}
		}
		hc.PortBindings[p] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(hostPort)}}
	})
}

// dockerPG runs PostgreSQL in a container on a fixed port. Stopping the
// container sends the image's stop signal, SIGINT: a fast shutdown.
func dockerPG(ctx context.Context) (adminURL string, restart func(context.Context) (time.Duration, error), stop func(), err error) {
	port, err := freePort()
	if err != nil {
		return "", nil, nil, err
	}
	ctr, err := tcpostgres.Run(ctx, postgresImage,
		tcpostgres.WithUsername("postgres"), tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithExposedPorts("5432/tcp"),
		fixedPort("5432/tcp", port),
		testcontainers.WithCmd("postgres", "-c", "fsync=off", "-c", "max_connections=300", "-c", "wal_level=logical"),
	)
	stop = func() { _ = testcontainers.TerminateContainer(ctr) }
	if err != nil {
		stop()
		return "", nil, nil, fmt.Errorf("postgres container: %w", err)
	}
	adminURL = fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	restart = func(ctx context.Context) (time.Duration, error) {
		t0 := time.Now()
		timeout := 30 * time.Second
		if err := ctr.Stop(ctx, &timeout); err != nil {
			return 0, fmt.Errorf("stop postgres container: %w", err)
		}
		if err := ctr.Start(ctx); err != nil {
			return 0, fmt.Errorf("start postgres container: %w", err)
		}
		if err := waitPG(ctx, adminURL, time.Minute); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	return adminURL, restart, stop, waitPG(ctx, adminURL, time.Minute)
}

// dockerKafka runs a single-node Kafka in KRaft mode (no ZooKeeper),
// advertising the fixed loopback port it is published on. Its log lives
// in the container, so a stop and start keeps the topics and the
// consumer groups' offsets.
func dockerKafka(ctx context.Context) (addr string, stopStart func(ctx context.Context, down time.Duration) error, stop func(), err error) {
	port, err := freePort()
	if err != nil {
		return "", nil, nil, err
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	ctr, err := testcontainers.Run(ctx, kafkaImage,
		testcontainers.WithExposedPorts("9092/tcp"),
		fixedPort("9092/tcp", port),
		testcontainers.WithEnv(map[string]string{
			"KAFKA_NODE_ID":                                  "1",
			"KAFKA_PROCESS_ROLES":                            "broker,controller",
			"KAFKA_LISTENERS":                                "PLAINTEXT://:9092,CONTROLLER://:9093",
			"KAFKA_ADVERTISED_LISTENERS":                     "PLAINTEXT://" + addr,
			"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9093",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
			"KAFKA_NUM_PARTITIONS":                           strconv.Itoa(Partitions),
		}),
		testcontainers.WithWaitStrategy(wait.ForListeningPort("9092/tcp").WithStartupTimeout(2*time.Minute)),
	)
	stop = func() { _ = testcontainers.TerminateContainer(ctr) }
	if err != nil {
		stop()
		return "", nil, nil, fmt.Errorf("kafka container: %w", err)
	}
	stopStart = func(ctx context.Context, down time.Duration) error {
		timeout := 30 * time.Second
		if err := ctr.Stop(ctx, &timeout); err != nil {
			return fmt.Errorf("stop kafka container: %w", err)
		}
		time.Sleep(down)
		if err := ctr.Start(ctx); err != nil {
			return fmt.Errorf("start kafka container: %w", err)
		}
		return nil
	}
	return addr, stopStart, stop, nil
}
