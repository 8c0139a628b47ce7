package suite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/testcontainers/testcontainers-go"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/broker"
)

// Partitions is the partition count of the topics the suite creates.
const Partitions = 8

// Env is where the pipeline runs: a PostgreSQL server holding the event
// store and the read models (two databases), and a Kafka cluster.
type Env struct {
	// Path says in words which servers were used.
	Path string
	// EventsURL and ReadURL are the event store and read-model databases.
	EventsURL, ReadURL string
	// Brokers is the bootstrap address list (KAFKA_BROKERS form).
	Brokers string
	// External is true when KAFKA_BROKERS named the cluster: its
	// KAFKA_* settings are passed on and it cannot be stopped.
	External bool
	// OutboxMode, when set, is the ESFLOW_OUTBOX_MODE of the processes
	// using the event store (writers and relays): "table" or "wal".
	OutboxMode string

	restartPG      func(context.Context) (time.Duration, error) // nil: not ours to restart
	kafkaStopStart func(context.Context, time.Duration) error   // the Kafka container's

	mu       sync.Mutex
	embedded bool
	broker   *broker.Broker // the embedded broker; nil when stopped
}

// NewEnv picks the servers. DATABASE_URL (or ESFLOW_TEST_DATABASE_URL)
// and KAFKA_BROKERS name existing ones. Otherwise, when a Docker engine
// answers, PostgreSQL and Kafka (KRaft) run in containers from their
// official images; without Docker, PostgreSQL is a cluster of the suite's
// own from the installed binaries and Kafka the embedded broker
// (pkg/broker) on loopback. ESFLOW_FAULTS_PATH=local or =docker forces the
// choice. Without PostgreSQL the test is skipped, or fails when CI=true.
func NewEnv(ctx context.Context, t testing.TB) *Env {
	t.Helper()
	e := &Env{}
	var where []string
	useDocker := false
	switch force := os.Getenv("ESFLOW_FAULTS_PATH"); force {
	case "local":
		where = append(where, "ESFLOW_FAULTS_PATH=local")
	case "docker":
		useDocker = true
		where = append(where, "ESFLOW_FAULTS_PATH=docker")
	case "":
		if err := dockerAnswers(ctx); err != nil {
			where = append(where, "no Docker engine ("+firstLine(err.Error())+"): local fallback")
		} else {
			useDocker = true
			where = append(where, "Docker engine answers: containers")
		}
	default:
		t.Fatalf("ESFLOW_FAULTS_PATH=%q: want local or docker", force)
	}

	switch {
	case os.Getenv(pgtest.ServerURLEnv) != "" || os.Getenv("DATABASE_URL") != "":
		e.EventsURL = pgtest.NewDatabase(t)
		e.ReadURL = pgtest.NewDatabase(t)
		where = append(where, "PostgreSQL: existing server from DATABASE_URL (no restart fault)")
	case useDocker:
		admin, restart, stop, err := dockerPG(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		e.restartPG = restart
		e.setDatabases(ctx, t, admin)
		where = append(where, "PostgreSQL: container "+postgresImage)
	default:
		pg, err := StartLocalPG(ctx)
		if err != nil {
			if errors.Is(err, ErrNoLocalPG) && os.Getenv("CI") != "true" {
				t.Skipf("no PostgreSQL: %v", err)
			}
			t.Fatalf("local PostgreSQL: %v", err)
		}
		t.Cleanup(func() {
			if err := pg.Close(); err != nil {
				t.Errorf("stop PostgreSQL: %v", err)
			}
		})
		e.restartPG = pg.Restart
		e.setDatabases(ctx, t, pg.AdminURL())
		where = append(where, "PostgreSQL: local cluster from "+pg.bin)
	}

	switch b := os.Getenv("KAFKA_BROKERS"); {
	case b != "":
		e.Brokers, e.External = b, true
		if err := createTopics(ctx, strings.Split(b, ",")[0]); err != nil {
			t.Fatal(err)
		}
		where = append(where, "Kafka: existing cluster from KAFKA_BROKERS (no broker fault)")
	case useDocker:
		addr, stopStart, stop, err := dockerKafka(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		e.Brokers, e.kafkaStopStart = addr, stopStart
		if err := createTopics(ctx, addr); err != nil {
			t.Fatal(err)
		}
		where = append(where, "Kafka: container "+kafkaImage+" (KRaft) on "+addr)
	default:
		e.embedded = true
		if err := e.StartBroker(ctx, "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.StopBroker)
		where = append(where, "Kafka: embedded broker (pkg/broker, kfake) on "+e.Brokers)
	}
	e.Path = strings.Join(where, "; ")
	return e
}

func (e *Env) setDatabases(ctx context.Context, t testing.TB, adminURL string) {
	t.Helper()
	urls, err := CreateDatabases(ctx, adminURL, "esflow_events", "esflow_read")
	if err != nil {
		t.Fatal(err)
	}
	e.EventsURL, e.ReadURL = urls[0], urls[1]
}

// CanRestartPG reports whether the PostgreSQL server is the suite's own.
func (e *Env) CanRestartPG() bool { return e.restartPG != nil }

// RestartPG stops PostgreSQL with a fast shutdown and starts it again on
// the same address; it returns how long it was away.
func (e *Env) RestartPG(ctx context.Context) (time.Duration, error) {
	if e.restartPG == nil {
		return 0, errors.New("PostgreSQL is not the suite's to restart")
	}
	return e.restartPG(ctx)
}

// Embedded reports whether Kafka is the embedded broker, which keeps
// nothing across a stop.
func (e *Env) Embedded() bool { return e.embedded }

// CanStopKafka reports whether the broker is the suite's own.
func (e *Env) CanStopKafka() bool { return e.embedded || e.kafkaStopStart != nil }

// StopStartKafka stops the Kafka container, waits down, and starts it
// again on the same address (the container path; see StopBroker and
// StartBroker for the embedded broker).
func (e *Env) StopStartKafka(ctx context.Context, down time.Duration) error {
	if e.kafkaStopStart == nil {
		return errors.New("no Kafka container")
	}
	return e.kafkaStopStart(ctx, down)
}

// StartBroker starts the embedded broker on addr, retrying while the port
// is still held by the previous one.
func (e *Env) StartBroker(ctx context.Context, addr string) error {
	var err error
	for range 100 {
		var b *broker.Broker
		b, err = broker.Start(ctx, broker.Config{Addr: addr, Partitions: Partitions,
			Topics: []string{readmodel.WorldTopic, readmodel.ExampleTopic}})
		if err == nil {
			e.mu.Lock()
			e.broker, e.Brokers = b, b.Addr()
			e.mu.Unlock()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("start broker on %s: %w", addr, err)
}

// StopBroker stops the embedded broker; it keeps nothing.
func (e *Env) StopBroker() {
	e.mu.Lock()
	b := e.broker
	e.broker = nil
	e.mu.Unlock()
	if b != nil {
		_ = b.Close()
	}
}

// ProcessEnv returns the environment variables and the inherited ones to
// drop for a service using database url.
func (e *Env) ProcessEnv(url string) (set, unset []string) {
	set = []string{"DATABASE_URL=" + url, "KAFKA_BROKERS=" + e.Brokers}
	unset = []string{"DB_URI", "CIPHER_KEY", "ESFLOW_COMPRESS", "ESFLOW_TEST_DATABASE_URL", "ESFLOW_OUTBOX_MODE"}
	if e.OutboxMode != "" && url == e.EventsURL {
		set = append(set, "ESFLOW_OUTBOX_MODE="+e.OutboxMode)
	}
	if !e.External {
		unset = append(unset, "KAFKA_*")
	}
	return set, unset
}

// createTopics creates the suite's topics on an existing cluster (an
// existing topic is fine).
func createTopics(ctx context.Context, addr string) error {
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("kafka %s: %w", addr, err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("kafka controller: %w", err)
	}
	cc, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("kafka controller: %w", err)
	}
	defer cc.Close()
	for _, topic := range []string{readmodel.WorldTopic, readmodel.ExampleTopic} {
		err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: Partitions, ReplicationFactor: 1})
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return nil
}

// waitPG waits until the server at url accepts connections.
func waitPG(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, url)
		if err == nil {
			err = conn.Ping(cctx)
			_ = conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres at %s not ready after %s: %w", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dockerAnswers returns nil when a Docker engine answers.
func dockerAnswers(ctx context.Context) (err error) {
	defer func() { // testcontainers may panic without a Docker host
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Health(ctx)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
