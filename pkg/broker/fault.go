package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FailNextProduce makes the broker answer the next produce request with
// the retryable error NOT_ENOUGH_REPLICAS for each of its partitions,
// storing none of its records. before, when not nil, runs first, in the
// broker's request loop: before the producer can see the answer, so a
// test can act on the producer at the moment it is waiting for it (stop
// the process, drop its database session). Later requests are served
// normally. It is fault injection for tests; calling it on a closed broker
// does nothing.
func (b *Broker) FailNextProduce(before func()) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return
	}
	b.cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		q, ok := req.(*kmsg.ProduceRequest)
		if !ok {
			return nil, nil, false
		}
		if before != nil {
			before()
		}
		resp, _ := q.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range q.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.NotEnoughReplicas.Code
				rp.BaseOffset = -1
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}
