// Package relayservice wires an application's outbox to Kafka the way
// every esflow command runs its relay (cmd/relay, cmd/writer's in-process
// relay, cmd/esflow): a kafkapub publisher, Prometheus metrics and a
// relay loop, plus the liveness check the ops endpoints serve.
package relayservice

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
	"github.com/esflow/esflow/pkg/relay/relaymetrics"
)

// silentAfter is how long the relay loop may go without a beat before
// Live reports it stuck.
const silentAfter = time.Minute

// Config configures a Service.
type Config struct {
	// Kafka names the cluster (brokers, client id, TLS, SASL).
	Kafka kafkaenv.Config
	// AutoCreateTopics, Partitions and ReplicationFactor are kafkapub's.
	AutoCreateTopics  bool
	Partitions        int
	ReplicationFactor int
	// CloudEvents configures the ce_* headers (kafkapub.Config's).
	CloudEvents kafkapub.CloudEvents
	// Shard, BatchSize and PollInterval are relay.Config's.
	Shard        outbox.Shard
	BatchSize    int
	PollInterval time.Duration
	// Metrics receives the relay's metrics.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// SetFlags copies the commands' relay flags into c.
func (c *Config) SetFlags(f cli.RelayFlags) {
	c.AutoCreateTopics = *f.AutoCreateTopics
	c.Partitions = *f.TopicPartitions
	c.ReplicationFactor = *f.TopicReplication
	c.CloudEvents = kafkapub.CloudEvents{Disabled: !*f.CloudEvents, Source: *f.CloudEventsSource}
}

// Service is a relay publishing an application's outbox to Kafka.
type Service struct {
	*relay.Relay
	pub *kafkapub.Publisher
}

// New builds the publisher and the relay; call Run, then Close.
func New(box application.Outbox, cfg Config) (*Service, error) {
	pub, err := kafkapub.New(kafkapub.Config{
		Brokers: cfg.Kafka.Brokers, ClientID: cfg.Kafka.ClientID, TLS: cfg.Kafka.TLS, SASL: cfg.Kafka.SASL,
		AutoCreateTopics: cfg.AutoCreateTopics, Partitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor,
		CloudEvents: cfg.CloudEvents,
	})
	if err != nil {
		return nil, err
	}
	hooks := relaymetrics.New(cfg.Metrics, box, cfg.Shard).Hooks()
	r, err := relay.New(box, pub, relay.Config{
		Shard: cfg.Shard, BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval,
		Locker: box, Waker: box, Hooks: hooks, Logger: cfg.Logger,
	})
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	return &Service{Relay: r, pub: pub}, nil
}

// Live fails when the relay loop has been silent for a minute.
func (s *Service) Live(context.Context) error {
	if age := time.Since(s.LastBeat()); age > silentAfter {
		return fmt.Errorf("relay loop silent for %s", age.Round(time.Second))
	}
	return nil
}

// Close releases the publisher. Call it after Run has returned.
func (s *Service) Close() error { return s.pub.Close() }
