package kafkapub_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// switchFence is a fence the test revokes.
type switchFence struct{ revoked atomic.Bool }

func (f *switchFence) Check() error {
	if f.revoked.Load() {
		return fmt.Errorf("test lease: %w", outbox.ErrFenced)
	}
	return nil
}

func (f *switchFence) Deadline() time.Time { return time.Time{} }

func lastOffset(t *testing.T, addr, topic string) int64 {
	t.Helper()
	conn, err := kafka.DialLeader(context.Background(), "tcp", addr, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	off, err := conn.ReadLastOffset()
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// TestFencedPublish: a publish under a fence that holds is written; once
// the fence fails nothing more reaches the broker, including the retry
// of a request the broker refused while the fence failed (the moment a
// paused relay resumes), and the error matches outbox.ErrFenced, not
// relay.ErrPermanent.
func TestFencedPublish(t *testing.T) {
	b := startBroker(t, broker.Config{Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const topic = "fenced"
	if err := b.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, kafkapub.Config{Brokers: []string{b.Addr()}})
	f := &switchFence{}
	fctx := relay.WithFence(ctx, f)
	batch := func(from int) []outbox.Message {
		var out []outbox.Message
		for i := from; i < from+10; i++ {
			out = append(out, msg(topic, int64(i), "k", fmt.Appendf(nil, "v%d", i)))
		}
		return out
	}
	if err := p.Publish(fctx, batch(0)); err != nil {
		t.Fatalf("publish under a valid fence: %v", err)
	}
	if got := lastOffset(t, b.Addr(), topic); got != 10 {
		t.Fatalf("end offset %d, want 10", got)
	}

	// The broker refuses the next request (retryable) and the fence fails
	// before the answer: the publisher must not send the retry.
	b.FailNextProduce(func() { f.revoked.Store(true) })
	err := p.Publish(fctx, batch(10))
	if !errors.Is(err, outbox.ErrFenced) || errors.Is(err, relay.ErrPermanent) {
		t.Fatalf("publish after the fence failed: %v, want ErrFenced and not permanent", err)
	}
	if got := lastOffset(t, b.Addr(), topic); got != 10 {
		t.Fatalf("end offset %d after the fenced publish, want 10", got)
	}
	// A later call under the failed fence sends nothing at all.
	if err := p.Publish(fctx, batch(20)); !errors.Is(err, outbox.ErrFenced) {
		t.Fatalf("second fenced publish: %v", err)
	}
	if got := lastOffset(t, b.Addr(), topic); got != 10 {
		t.Fatalf("end offset %d, want 10", got)
	}
	// Without a fence the publisher works as before.
	if err := p.Publish(ctx, batch(30)); err != nil {
		t.Fatalf("publish without a fence: %v", err)
	}
}
