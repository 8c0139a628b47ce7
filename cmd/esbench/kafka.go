package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/kafkaenv"
)

// brokerEnv marks the child process that runs the embedded broker; the
// -broker flag does the same for the command, the variable also for a test
// binary (whose flags the testing package owns).
const brokerEnv = "ESBENCH_BROKER_CHILD"

// partitions of every topic the workloads use (the setup).
const partitions = 8

func brokerChild(args []string) bool {
	if os.Getenv(brokerEnv) == "1" {
		return true
	}
	for _, a := range args {
		if a == "-broker" || a == "--broker" {
			return true
		}
	}
	return false
}

// runBroker is the child process: it starts the embedded broker, prints
// its address on a line of its own and serves until stdin closes (the
// parent exited or closed the pipe) or a signal arrives.
func runBroker(stdin io.Reader, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := broker.Start(ctx, broker.Config{Partitions: partitions})
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := fmt.Fprintln(stdout, b.Addr()); err != nil {
		return err
	}
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(closed)
	}()
	select {
	case <-closed:
	case <-ctx.Done():
	}
	return nil
}

// kafkaServer is the broker the workloads publish to.
type kafkaServer struct {
	brokers []string
	stop    func() error
	pid     int // the child broker's process id; 0 for KAFKA_BROKERS
}

// Close stops the child broker, if esbench started one.
func (k *kafkaServer) Close() error {
	if k.stop == nil {
		return nil
	}
	return k.stop()
}

// startKafka returns KAFKA_BROKERS' cluster, or starts the embedded broker
// in a child process.
func startKafka(ctx context.Context, say func(string, ...any)) (*kafkaServer, error) {
	if os.Getenv("KAFKA_BROKERS") != "" {
		cfg, err := kafkaenv.FromEnv("esbench")
		if err != nil {
			return nil, err
		}
		say("kafka: KAFKA_BROKERS %s", strings.Join(cfg.Brokers, ","))
		return &kafkaServer{brokers: cfg.Brokers}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, "-broker")
	cmd.Env = append(os.Environ(), brokerEnv+"=1")
	cmd.Stderr = os.Stderr
	// The child also goes when this process dies without closing the pipe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start broker process: %w", err)
	}
	stop := func() error {
		_ = in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return errors.New("broker process did not exit; killed")
		}
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			addr <- strings.TrimSpace(sc.Text())
		}
		close(addr)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case a, ok := <-addr:
		if !ok || a == "" {
			return nil, errors.Join(errors.New("broker process printed no address"), stop())
		}
		say("kafka: embedded broker in process %d at %s (%d partitions)", cmd.Process.Pid, a, partitions)
		return &kafkaServer{brokers: []string{a}, stop: stop, pid: cmd.Process.Pid}, nil
	case <-time.After(30 * time.Second):
		return nil, errors.Join(errors.New("broker process did not start in 30s"), stop())
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), stop())
	}
}

// createTopic creates a topic with the benchmark's partition count and
// waits until its metadata shows every partition.
func (k *kafkaServer) createTopic(ctx context.Context, topic string) error {
	c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: -1,
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s not visible with %d partitions after 10s (last error %v)", topic, partitions, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteTopic deletes topic: the embedded broker keeps every record in
// its memory, and its garbage collector's work grows with it (W2's
// rounds slowed down from one to the next until their topics were
// deleted after each).
func (k *kafkaServer) deleteTopic(ctx context.Context, topic string) error {
	c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	resp, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// writer is a kafka-go producer configured as the fastest plain client
// measured on this machine (shared/MEASURED.md): acks=all, batches of up to
// 1000, a 2 ms batch timeout, murmur2 keys like the relay's.
func (k *kafkaServer) writer() *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(k.brokers...), Balancer: &kafka.Murmur2Balancer{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 1000, BatchTimeout: 2 * time.Millisecond, BatchBytes: 1 << 20, Transport: &kafka.Transport{},
	}
}

// reader is a kafka-go consumer in a fresh group: a long-polling fetch
// (MinBytes 1, MaxWait 250 ms, as the projection runner uses), which the
// broker answers as soon as a produce lands, and offsets committed once a
// second (the default, a synchronous commit per message, is a different
// benchmark). A short MaxWait made it worse, not better: with 5 ms, each
// of the 8 partition fetchers polled 200 times a second, and that CPU on
// 2 cores raised W3's commit → consumer p99 from 4.3 ms to 8.7 ms
// (measured back to back, go run ./cmd/esbench -only w3). ReadBatchTimeout
// keeps its default: a few milliseconds there abandons large fetches half
// read on a busy machine.
func (k *kafkaServer) reader(group, topic string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers: k.brokers, GroupID: group, Topic: topic, StartOffset: kafka.FirstOffset,
		CommitInterval: time.Second, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
		ReadBackoffMin: time.Millisecond, ReadBackoffMax: 5 * time.Millisecond,
	})
}
