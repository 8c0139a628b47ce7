package kafkapub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"

	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay"
)

// chunk is one partition's share of one round: messages msgs[i] for i in
// idx, in slice order, sent as one record batch.
type chunk struct {
	topic     string
	partition int
	idx       []int
	err       error // outcome of the last attempt
	done      bool  // acknowledged, or failed for good
}

// produceAll writes msgs[i] for i in pending and records each outcome in
// errs. Each topic-partition's messages are split into chunks of at most
// BatchSize messages and MaxMessageBytes bytes. Round r sends chunk r of
// every partition with one produce request per leader broker (a single
// request on a one-broker cluster), and waits for it: so one record batch
// per partition is in flight at a time, and a partition's chunks are
// appended in order. A round with a failure that retrying did not fix
// ends the call; the later rounds' messages are reported errNotSent.
//
// I/O uses wctx, which outlives ctx (see write); ctx is checked between
// rounds, so a cancelled call sends no further round.
func (p *Publisher) produceAll(ctx, wctx context.Context, msgs []outbox.Message, pending []int, sizes []int, errs []error) {
	// Partition each topic's messages, keeping slice order per partition.
	type tp struct {
		topic     string
		partition int
	}
	var order []tp // first-seen order, for deterministic rounds
	parts := map[tp][]int{}
	layouts := map[string][]int{}
	failed := false
	for _, i := range pending {
		m := &msgs[i]
		ids, ok := layouts[m.Topic]
		if !ok {
			var err error
			if ids, err = p.partitions(wctx, m.Topic); err != nil {
				p.forget(m.Topic)
				ids = nil
			} else if len(ids) == 0 {
				err = fmt.Errorf("kafkapub: topic %q has no partitions: %w", m.Topic, kafka.LeaderNotAvailable)
			}
			if err != nil {
				errs[i] = err
			}
			layouts[m.Topic] = ids
		}
		if len(ids) == 0 {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("kafkapub: topic %q: no partitions known", m.Topic)
			}
			failed = true
			continue
		}
		k := tp{m.Topic, p.cfg.Balancer.Balance(kafka.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}, ids...)}
		if _, seen := parts[k]; !seen {
			order = append(order, k)
		}
		parts[k] = append(parts[k], i)
	}
	if failed {
		// A retryable failure before anything was sent: send nothing.
		for _, i := range pending {
			if errs[i] == nil {
				errs[i] = errNotSent
			}
		}
		return
	}

	// Cut every partition's queue into chunks.
	var rounds [][]*chunk
	for _, k := range order {
		idx := parts[k]
		for r := 0; len(idx) > 0; r++ {
			n, bytes := 0, 0
			for n < len(idx) && n < p.cfg.BatchSize && (n == 0 || bytes+sizes[idx[n]] <= p.cfg.MaxMessageBytes) {
				bytes += sizes[idx[n]]
				n++
			}
			if r == len(rounds) {
				rounds = append(rounds, nil)
			}
			rounds[r] = append(rounds[r], &chunk{topic: k.topic, partition: k.partition, idx: idx[:n:n]})
			idx = idx[n:]
		}
	}

	for r, round := range rounds {
		if err := ctx.Err(); err != nil {
			for _, rest := range rounds[r:] {
				for _, c := range rest {
					markAll(errs, c.idx, fmt.Errorf("kafkapub: publish: %w", err))
				}
			}
			return
		}
		if !p.sendRound(wctx, msgs, round, errs) {
			for _, rest := range rounds[r+1:] {
				for _, c := range rest {
					markAll(errs, c.idx, errNotSent)
				}
			}
			return
		}
	}
}

// sendRound writes the chunks, retrying retryable failures up to
// MaxAttempts times, records the outcomes in errs, and reports whether the
// call may go on (no message failed with a retryable error).
func (p *Publisher) sendRound(ctx context.Context, msgs []outbox.Message, round []*chunk, errs []error) bool {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		p.attempt(ctx, msgs, round)
		retry := false
		for _, c := range round {
			if !c.done && attempt < p.cfg.MaxAttempts {
				retry = true
			}
		}
		if !retry {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done(): // the backstop bound of write
			t.Stop()
		}
		backoff = min(2*backoff, time.Second)
	}
	ok := true
	var tooLarge []*chunk
	for _, c := range round {
		switch {
		case c.err == nil:
		case errors.Is(c.err, kafka.MessageSizeTooLarge) && len(c.idx) > 1:
			// The broker refused the batch, not necessarily each message.
			tooLarge = append(tooLarge, c)
		default:
			err := p.classify(c.topic, c.err)
			markAll(errs, c.idx, err)
			if !errors.Is(err, relay.ErrPermanent) {
				ok = false
			}
		}
	}
	// Send the refused batches' messages one at a time, in order, to find
	// the ones that are too large on their own.
	for _, c := range tooLarge {
		for k, i := range c.idx {
			if !ok {
				markAll(errs, c.idx[k:], errNotSent)
				break
			}
			one := &chunk{topic: c.topic, partition: c.partition, idx: []int{i}}
			ok = p.sendRound(ctx, msgs, []*chunk{one}, errs)
		}
	}
	return ok
}

// attempt sends the chunks not yet done, one produce request per leader
// broker, concurrently, and sets each chunk's err and done.
func (p *Publisher) attempt(ctx context.Context, msgs []outbox.Message, round []*chunk) {
	groups := map[int][]*chunk{} // leader id -> chunks
	topics := map[string]kafka.Topic{}
	for _, c := range round {
		if c.done {
			continue
		}
		md, ok := topics[c.topic]
		if !ok {
			var err error
			if md, err = p.metadata(ctx, c.topic); err != nil {
				c.err = err
				continue
			}
			topics[c.topic] = md
		}
		leader, err := leaderOf(md, c.partition)
		if err != nil {
			c.err = err
			continue
		}
		groups[leader] = append(groups[leader], c)
	}
	now := time.Now()
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.request(ctx, msgs, g, now)
		}()
	}
	wg.Wait()
}

// request sends one produce request holding the chunks (all led by one
// broker) and sets their outcomes.
func (p *Publisher) request(ctx context.Context, msgs []outbox.Message, chunks []*chunk, now time.Time) {
	req := &produce.Request{
		Acks:    int16(kafka.RequireAll),
		Timeout: int32(p.cfg.WriteTimeout / time.Millisecond),
	}
	topicAt := map[string]int{}
	n := 0
	for _, c := range chunks {
		for _, i := range c.idx {
			n += len(msgs[i].Headers)
			if p.ceSource != nil {
				n += ceHeaders
			}
		}
	}
	headers := make([]protocol.Header, 0, n)
	for _, c := range chunks {
		t, ok := topicAt[c.topic]
		if !ok {
			t = len(req.Topics)
			topicAt[c.topic] = t
			req.Topics = append(req.Topics, produce.RequestTopic{Topic: c.topic})
		}
		records := make([]protocol.Record, len(c.idx))
		for j, i := range c.idx {
			m := &msgs[i]
			h0 := len(headers)
			for _, h := range m.Headers {
				headers = append(headers, protocol.Header{Key: h.Key, Value: h.Value})
			}
			headers = appendCloudEvents(headers, m, p.ceSource)
			records[j] = protocol.Record{
				Time:    now,
				Key:     protocol.NewBytes(m.Key),
				Value:   protocol.NewBytes(m.Value),
				Headers: headers[h0:len(headers):len(headers)],
			}
		}
		req.Topics[t].Partitions = append(req.Topics[t].Partitions, produce.RequestPartition{
			Partition: int32(c.partition),
			RecordSet: protocol.RecordSet{Records: protocol.NewRecordReader(records...)},
		})
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	// The last check before the request is handed to the transport; the
	// connection checks once more right before its write (fencedConn).
	if err := relay.CheckFence(ctx); err != nil {
		for _, c := range chunks {
			c.err, c.done = fmt.Errorf("kafkapub: produce not sent: %w", err), true
		}
		return
	}
	res, err := p.transport.RoundTrip(rctx, p.addr, req)
	if err != nil {
		for _, c := range chunks {
			c.err = fmt.Errorf("kafkapub: produce: %w", err)
		}
		return
	}
	resp, ok := res.(*produce.Response)
	if !ok {
		for _, c := range chunks {
			c.err = fmt.Errorf("kafkapub: produce: unexpected response %T", res)
		}
		return
	}
	type tp struct {
		topic     string
		partition int32
	}
	codes := map[tp]int16{}
	for _, t := range resp.Topics {
		for _, pr := range t.Partitions {
			codes[tp{t.Topic, pr.Partition}] = pr.ErrorCode
		}
	}
	for _, c := range chunks {
		code, ok := codes[tp{c.topic, int32(c.partition)}]
		switch {
		case !ok:
			c.err = fmt.Errorf("kafkapub: produce: no response for %s/%d", c.topic, c.partition)
		case code != 0:
			c.err = kafka.Error(code)
			c.done = !kafka.Error(code).Temporary()
		default:
			c.err, c.done = nil, true
		}
	}
}

// partitions returns the ids of topic's partitions from the Transport's
// cached metadata.
func (p *Publisher) partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := p.metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	ids := make([]int, len(md.Partitions))
	for i, pt := range md.Partitions {
		ids[i] = pt.ID
	}
	return ids, nil
}

// leaderOf returns the id of the broker leading the topic's partition.
func leaderOf(md kafka.Topic, partition int) (int, error) {
	for _, pt := range md.Partitions {
		if pt.ID == partition {
			return pt.Leader.ID, nil
		}
	}
	return 0, fmt.Errorf("kafkapub: %s/%d: %w", md.Name, partition, kafka.UnknownTopicOrPartition)
}

// metadata returns topic's metadata. kafka-go's Transport answers from its
// cache (refreshed every MetadataTTL), the same cache it routes produce
// requests with.
func (p *Publisher) metadata(ctx context.Context, topic string) (kafka.Topic, error) {
	mctx, cancel := context.WithTimeout(ctx, p.cfg.WriteTimeout)
	defer cancel()
	md, err := p.client.Metadata(mctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return kafka.Topic{}, fmt.Errorf("kafkapub: metadata for topic %q: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return kafka.Topic{}, fmt.Errorf("kafkapub: topic %q: %w", topic, t.Error)
			}
			return t, nil
		}
	}
	return kafka.Topic{}, fmt.Errorf("kafkapub: topic %q: %w", topic, kafka.UnknownTopicOrPartition)
}
