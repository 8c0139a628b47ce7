// Package broker runs an embedded, in-memory Kafka-protocol broker
// (github.com/twmb/franz-go/pkg/kfake) on a loopback port, so that tests,
// demos and local development can use real Kafka clients (kafka-go, kcat,
// librdkafka, the Java client) without a Kafka installation.
//
// The broker is a single node: every partition has one replica, which is
// the whole in-sync replica set, so acks=all is acknowledged as soon as the
// record is stored in memory. Nothing is persisted; Close discards
// everything. It is a protocol-faithful stand-in, not a measure of a real
// broker's speed: kfake serves all requests on one goroutine.
//
// Only loopback addresses (127.0.0.0/8, ::1, localhost) are accepted.
package broker

import (
	"github.com/google/uuid"

	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultAddr is the listen address used when Config.Addr is empty: a
// random free port on the IPv4 loopback interface.
const DefaultAddr = "127.0.0.1:0"

// DefaultPartitions is the partition count of auto-created topics (and of
// Config.Topics) when Config.Partitions is zero.
const DefaultPartitions = 8

// ErrClosed is returned by operations on a closed Broker.
var ErrClosed = errors.New("broker: closed")

// Config configures an embedded broker. The zero value is usable.
type Config struct {
	// Addr is the host:port to listen on; the host must be a loopback
	// address or "localhost" (which means 127.0.0.1). Port 0 picks a free
	// port. Default DefaultAddr.
	Addr string
	// Partitions is the partition count of topics created on demand (a
	// client's metadata request naming an unknown topic with
	// auto-creation allowed, as kafka-go's Writer with
	// AllowAutoTopicCreation, librdkafka and the Java client send) and of
	// Topics. Default DefaultPartitions.
	Partitions int
	// Topics are created at start with Partitions partitions.
	Topics []string
}

// Broker is a running embedded broker. Its methods are safe for concurrent
// use.
type Broker struct {
	cluster    *kfake.Cluster
	addr       string
	partitions int

	mu     sync.RWMutex // held for reading by in-flight admin calls
	closed bool

	stopReaper context.CancelFunc
	reaperDone chan struct{}
}

// Start starts a broker listening on cfg.Addr. The broker runs until Close;
// ctx only bounds the start itself.
func Start(ctx context.Context, cfg Config) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("broker: start: %w", err)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, port, err := loopbackHostPort(addr)
	if err != nil {
		return nil, err
	}
	parts := cfg.Partitions
	if parts == 0 {
		parts = DefaultPartitions
	}
	if parts < 0 || parts > 1<<20 {
		return nil, fmt.Errorf("broker: invalid partition count %d", parts)
	}

	// kfake listens on 127.0.0.1 by default; ListenFn lets us bind the
	// configured loopback host instead. kfake advertises the listener's
	// own address in metadata responses, so the address clients bootstrap
	// from and the one they are redirected to are the same.
	listen := func(network, _ string) (net.Listener, error) {
		var lc net.ListenConfig
		return lc.Listen(ctx, network, net.JoinHostPort(host, strconv.Itoa(port)))
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(listen),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(parts),
		// Every start is a new cluster: the broker keeps no log across
		// a restart, so its offsets start again, and consumers that compare
		// the cluster id (pkg/projection) know to read from the start.
		kfake.ClusterID("esflow-" + uuid.NewString()),
	}
	if len(cfg.Topics) > 0 {
		for _, t := range cfg.Topics {
			if t == "" {
				return nil, errors.New("broker: empty topic name in Config.Topics")
			}
		}
		opts = append(opts, kfake.SeedTopics(int32(parts), cfg.Topics...))
	}
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: start on %s: %w", addr, err)
	}
	addrs := cluster.ListenAddrs()
	if len(addrs) != 1 {
		cluster.Close()
		return nil, fmt.Errorf("broker: expected one listener, got %d", len(addrs))
	}
	b := &Broker{cluster: cluster, addr: addrs[0], partitions: parts, reaperDone: make(chan struct{})}
	r := newReaper()
	r.watch(cluster)
	rctx, stop := context.WithCancel(context.Background())
	b.stopReaper = stop
	go func() {
		defer close(b.reaperDone)
		r.run(rctx, b.addr)
	}()
	return b, nil
}

// loopbackHostPort splits addr and checks that its host is a loopback
// address. "localhost" is mapped to 127.0.0.1 so the advertised address
// does not depend on the resolver.
func loopbackHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("broker: invalid address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("broker: invalid port in address %q", addr)
	}
	if host == "localhost" {
		return "127.0.0.1", port, nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", 0, fmt.Errorf("broker: address %q is not a loopback address: the embedded broker only listens on 127.0.0.0/8, ::1 or localhost", addr)
	}
	return ip.String(), port, nil
}

// Addr returns the host:port clients bootstrap from. It is also the
// address the broker advertises in metadata responses.
func (b *Broker) Addr() string { return b.addr }

// Partitions returns the partition count given to auto-created topics.
func (b *Broker) Partitions() int { return b.partitions }

// CreateTopic creates a topic with the given partition count (<= 0 means
// the broker's default). Creating a topic that already exists succeeds,
// whatever its partition count.
func (b *Broker) CreateTopic(ctx context.Context, name string, partitions int) error {
	if name == "" {
		return errors.New("broker: create topic: empty name")
	}
	if partitions > 1<<20 {
		return fmt.Errorf("broker: create topic %q: invalid partition count %d", name, partitions)
	}
	if partitions < 0 {
		partitions = 0
	}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("broker: create topic %q: %w", name, ErrClosed)
	}
	// kfake's admin calls take no context and run on the cluster's
	// goroutine; run it aside so ctx is honoured. The read lock is held
	// until the call returns so Close cannot stop the cluster under it.
	done := make(chan error, 1)
	go func() {
		defer b.mu.RUnlock()
		done <- b.cluster.CreateTopic(name, int32(partitions), nil)
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("broker: create topic %q: %w", name, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("broker: create topic %q: %w", name, ctx.Err())
	}
}

// TopicPartitions returns the partition count of a topic, or 0 if it does
// not exist.
func (b *Broker) TopicPartitions(name string) (int, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, ErrClosed
	}
	return len(b.cluster.PartitionInfos(name)), nil
}

// Close stops the broker and drops its data; open client connections are
// cut. It is idempotent and always returns nil.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.stopReaper()
	<-b.reaperDone
	b.cluster.Close()
	return nil
}
