package projection

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
)

// handOverWait bounds how long a hand-over waits for the batch in flight
// (see check).
const handOverWait = 500 * time.Millisecond

// owner is the membership and lease state of one Run: which partitions
// this runner applies, each fed by its own partition reader. Only the
// manage goroutine changes it; the apply loop reads lease.dropped.
type owner struct {
	r      *Runner
	member int64
	lost   <-chan struct{} // the member's session broke
	wake   <-chan struct{} // another member released partitions or joined
	unlock func()
	out    chan<- item
	held   map[partitionKey]*lease
	// stopping are dropped leases whose readers may still be closing.
	stopping []*lease
	// recheck is set when an acquisition got fewer partitions than it
	// asked for (one was locked by a commit in flight, or taken): the
	// next check comes soon instead of at the next LeaseCheck.
	recheck bool
	// nextDiscover is when to look for (new) partitions again.
	nextDiscover  time.Time
	lastHeartbeat time.Time
}

// manage keeps this runner's share of the partitions until ctx ends:
// every LeaseCheck, and at once when another member notifies, it renews
// its heartbeat when due, reads the leases and the live members, drops
// leases it lost, hands over (releases) those the assignment gives to
// another live member, and acquires the free ones assigned to it. When
// ctx ends it releases every lease at once (release) and returns; the
// caller calls finish once the batch in flight is done.
func (o *owner) manage(ctx context.Context) {
	r := o.r
	t := time.NewTicker(r.cfg.LeaseCheck)
	defer t.Stop()
	if err := o.discover(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("partition discovery", "error", err)
	}
	o.settle(ctx)
	for {
		if o.lost == nil {
			if err := o.join(ctx); err != nil && ctx.Err() == nil {
				r.setLeaseFailing(true)
				r.hooks.Failed("lease", err)
				r.log.Warn("joining as a member failed; retrying", "error", err)
			}
		}
		if err := o.check(ctx); err != nil && ctx.Err() == nil {
			r.setLeaseFailing(true)
			r.hooks.Failed("lease", err)
			r.log.Warn("lease check failed; retrying", "error", err)
		}
		var soon <-chan time.Time
		if o.recheck {
			soon = time.After(min(20*time.Millisecond, r.cfg.LeaseCheck))
		}
		select {
		case <-ctx.Done():
			o.release(ctx)
			return
		case <-soon:
		case <-o.wake: // nil without a session
		case <-o.lost: // a nil channel (not a member) never fires
			// The member's session is gone, and with it (on PostgreSQL) the
			// others' view of this runner as alive: they may be taking its
			// partitions already. Stop them all and come back as a new
			// member at the next tick.
			r.log.Warn("member session lost; rejoining as a new member", "member", o.member)
			for _, l := range o.held {
				o.drop(l)
			}
			o.reap()
			o.unlock()
			o.lost, o.wake = nil, nil
		case <-t.C:
		}
	}
}

// discover lists the topics' partitions and creates their lease rows,
// and forgets long-dead members. Run before the first join too, so that
// a new member is ready to take its share the moment the others see it
// (they hand partitions over as soon as its row appears).
func (o *owner) discover(ctx context.Context) error {
	r := o.r
	parts, err := r.discoverPartitions(ctx)
	o.nextDiscover = time.Now().Add(r.cfg.DiscoverInterval)
	if len(parts) < len(r.p.Topics()) || err != nil {
		o.nextDiscover = time.Now().Add(min(r.cfg.DiscoverInterval, 2*time.Second))
	}
	if err != nil {
		r.log.Warn("partition discovery", "error", err)
	}
	if len(parts) > 0 {
		if err := r.ensureLeaseRows(ctx, parts); err != nil {
			return err
		}
	}
	if err := r.forgetMembers(ctx); err != nil {
		r.log.Warn("forget dead members", "error", err)
	}
	return nil
}

// settle delays the first join by up to JoinDelay while other members
// are alive: they apply every partition meanwhile, so the new process
// finishes starting (its other runners too) before partitions wait on
// its first batches. It joins at once when no other member is alive, at
// the start or later in the delay (the last one stopped): then no one
// else would apply them. A member that lost its session rejoins without
// it; that process is warm.
func (o *owner) settle(ctx context.Context) {
	r := o.r
	if r.cfg.JoinDelay <= 0 {
		return
	}
	deadline := time.Now().Add(r.cfg.JoinDelay)
	for first := true; ; first = false {
		_, alive, err := r.readLeases(ctx)
		if err != nil || len(alive) == 0 {
			return
		}
		if first {
			r.log.Info("other members alive; joining after the join delay", "members", len(alive), "join_delay", r.cfg.JoinDelay)
		}
		wait := time.Until(deadline)
		if wait <= 0 || !sleep(ctx, min(wait, r.cfg.LeaseCheck)) {
			return
		}
	}
}

// join registers as a new member.
func (o *owner) join(ctx context.Context) error {
	m, s, err := o.r.register(ctx)
	if err != nil {
		return err
	}
	o.member, o.lost, o.wake, o.unlock, o.lastHeartbeat = m, s.lost, s.wake, s.release, time.Now()
	o.r.log.Info("joined as member", "member", m)
	return nil
}

func (o *owner) check(ctx context.Context) error {
	r := o.r
	if o.lost == nil {
		return nil // not a member now: manage rejoins
	}
	if time.Since(o.lastHeartbeat) >= r.cfg.HeartbeatInterval {
		if err := r.heartbeat(ctx, o.member); err != nil {
			return err
		}
		o.lastHeartbeat = time.Now()
	}
	if time.Now().After(o.nextDiscover) {
		if err := o.discover(ctx); err != nil {
			return err
		}
	}
	defer o.reap()
	rows, alive, err := r.readLeases(ctx)
	if err != nil {
		return err
	}
	if !alive[o.member] {
		// Paused past LeaseTTL, or a clock step: the others may be taking
		// over. Renew at once; what is lost shows in the rows below.
		if err := r.heartbeat(ctx, o.member); err != nil {
			return err
		}
		o.lastHeartbeat = time.Now()
		alive[o.member] = true
	}
	members := make([]int64, 0, len(alive))
	for m := range alive {
		members = append(members, m)
	}
	keys := make([]partitionKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sortKeys(keys)
	want := assign(rows, members)

	var handOver []*lease
	for k, l := range o.held {
		row, ok := rows[k]
		switch {
		case !ok || row.owner != o.member || row.generation != l.gen:
			r.log.Warn("partition lease lost to another member", "topic", k.topic, "partition", k.partition,
				"generation", l.gen, "owner", row.owner, "owner_generation", row.generation)
			o.drop(l)
		case want[k] != o.member:
			handOver = append(handOver, l)
		}
	}
	// Rows naming this member that it does not hold (a release that
	// failed, say) would keep their partitions from the member they are
	// assigned to: release them too.
	var orphans []*lease
	for k, row := range rows {
		if row.owner == o.member && o.held[k] == nil && want[k] != o.member {
			orphans = append(orphans, &lease{key: k, gen: row.generation})
		}
	}
	if len(orphans) > 0 {
		if err := r.releaseLeases(ctx, o.member, orphans, false); err != nil {
			return err
		}
	}
	if len(handOver) > 0 {
		began := time.Now()
		for _, l := range handOver {
			o.drop(l) // the release does not wait for the readers to close
		}
		// It waits, up to handOverWait, for a batch in flight that holds
		// messages of these partitions. Released under it, the batch would
		// still commit if it got to the lease rows before the next owner's
		// acquisition (the release keeps the generation), but the next
		// owner, woken at once, usually gets there first: the batch would
		// be refused (ErrLeaseLost) and applied again without them, which
		// delays the partitions this runner keeps by a whole batch.
		if dones := r.batchesDone(handOver); len(dones) > 0 {
			t := time.NewTimer(handOverWait)
		wait:
			for _, done := range dones {
				select {
				case <-done:
				case <-t.C:
					break wait
				case <-ctx.Done():
					break wait
				}
			}
			t.Stop()
		}
		if err := r.releaseLeases(ctx, o.member, handOver, false); err != nil {
			return err
		}
		for _, l := range handOver {
			// took: from when this runner stopped applying the partition
			// to the release's commit.
			r.log.Info("partition handed over", "topic", l.key.topic, "partition", l.key.partition, "generation", l.gen,
				"took", time.Since(began).Round(time.Millisecond).String())
		}
	}
	var free []leaseRow
	for _, k := range keys {
		row := rows[k]
		if want[k] != o.member || o.held[k] != nil || (row.owner != 0 && alive[row.owner] && row.owner != o.member) {
			continue
		}
		free = append(free, row)
	}
	got, err := r.acquire(ctx, o.member, free) // those someone else took meanwhile are left out
	if err != nil {
		return err
	}
	o.recheck = len(got) < len(free)
	var fresh []partitionKey // no offset stored yet
	for _, a := range got {
		if a.nextOffset < 0 {
			fresh = append(fresh, a.key)
		}
	}
	initial := r.initialOffsets(ctx, fresh)
	for _, a := range got {
		from := a.nextOffset
		if from < 0 {
			from = initial[a.key]
		}
		o.start(ctx, a, from)
	}
	r.mu.Lock()
	r.leasesChecked, r.leaseFailing = true, false
	r.owned = len(o.held)
	r.mu.Unlock()
	return nil
}

// start begins applying a partition just acquired (a), from offset from.
func (o *owner) start(ctx context.Context, a leaseRow, from int64) {
	r := o.r
	rctx, cancel := context.WithCancel(ctx)
	k, gen := a.key, a.generation
	l := &lease{key: k, gen: gen, start: from, cluster: a.clusterID, acquired: time.Now(), cancel: cancel, done: make(chan struct{})}
	o.held[k] = l
	r.log.Info("partition acquired", "topic", k.topic, "partition", k.partition, "generation", gen, "offset", from)
	go func() {
		defer close(l.done)
		r.readPartition(rctx, l, o.out)
	}()
}

// drop stops applying a partition: the messages its reader fetched are
// skipped from now on, and the reader is told to stop; reap waits for it.
func (o *owner) drop(l *lease) {
	l.dropped.Store(true)
	l.cancel()
	o.stopping = append(o.stopping, l)
	delete(o.held, l.key)
	r := o.r
	r.mu.Lock()
	delete(r.partitions, l.key)
	r.owned = len(o.held)
	r.mu.Unlock()
}

// reap waits for the readers of dropped leases to stop.
func (o *owner) reap() {
	for _, l := range o.stopping {
		<-l.done
	}
	o.stopping = o.stopping[:0]
}

// release hands every lease over and removes the member, as soon as
// the runner is told to stop: a replica shutting down (SIGTERM) gives its
// partitions to the others at once, neither after its batch in flight
// nor when its heartbeat goes stale. The batch in flight is not waited
// for: the release keeps the generations, so it still commits if it gets
// to the lease rows before the next owner's acquisition (which then
// resumes after it), and is refused if it comes after (ErrLeaseLost;
// its partitions are all dropped, so nothing is retried).
func (o *owner) release(ctx context.Context) {
	r := o.r
	ls := make([]*lease, 0, len(o.held))
	for _, l := range o.held {
		l.dropped.Store(true)
		l.cancel()
		ls = append(ls, l)
	}
	if o.lost == nil {
		return // not a member: nothing to release
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.releaseLeases(hctx, o.member, ls, true); err != nil {
		r.log.Warn("hand-over at shutdown failed; the others take over when this member's heartbeat goes stale", "error", err)
	} else {
		r.log.Info("partitions handed over at shutdown", "partitions", len(ls), "member", o.member)
	}
}

// finish ends the member's session and waits for the readers, once the
// apply loop has returned.
func (o *owner) finish() {
	if o.lost != nil {
		o.unlock()
	}
	for _, l := range o.held {
		<-l.done
	}
	o.reap()
	o.held = map[partitionKey]*lease{}
}

// initialOffsets is where partitions without a stored offset start: the
// offset their consumer group committed (a projector upgraded from the
// consumer-group runner continues where the group stopped), else the
// first offset. Tracking makes either safe; the group's offset only
// saves re-reading the topic.
func (r *Runner) initialOffsets(ctx context.Context, keys []partitionKey) map[partitionKey]int64 {
	out := make(map[partitionKey]int64, len(keys))
	if len(keys) == 0 {
		return out
	}
	req := &kafka.OffsetFetchRequest{GroupID: r.cfg.GroupID, Topics: map[string][]int{}}
	for _, k := range keys {
		out[k] = kafka.FirstOffset
		req.Topics[k.topic] = append(req.Topics[k.topic], k.partition)
	}
	c := &kafka.Client{Addr: kafka.TCP(r.cfg.Brokers...), Timeout: 5 * time.Second, Transport: r.cfg.Transport}
	res, err := c.OffsetFetch(ctx, req)
	if err != nil || res.Error != nil {
		return out
	}
	for topic, ps := range res.Topics {
		for _, p := range ps {
			k := partitionKey{topic, p.Partition}
			if _, ok := out[k]; ok && p.Error == nil && p.CommittedOffset >= 0 {
				out[k] = p.CommittedOffset
			}
		}
	}
	return out
}

// fenceFor returns, per leased partition of items, the offset after the
// last of them and the cluster it was read from: what the transaction
// applying items writes, conditional on the lease's generation. A
// partition's items come in fetch order, so after a broker that lost its
// log (a new cluster, smaller offsets) the later item wins.
func fenceFor(items []item) []offsetRow {
	var out []offsetRow
	at := map[*lease]int{}
	for _, it := range items {
		if it.lease == nil {
			continue
		}
		if i, ok := at[it.lease]; ok {
			if it.cluster != out[i].cluster || it.m.Offset+1 > out[i].next {
				out[i].next, out[i].cluster = it.m.Offset+1, it.cluster
			}
			continue
		}
		at[it.lease] = len(out)
		out = append(out, offsetRow{key: it.lease.key, gen: it.lease.gen, next: it.m.Offset + 1, cluster: it.cluster})
	}
	return out
}

// verifyLeases re-reads the leases after a transaction was fenced
// (ErrLeaseLost) and marks the ones this runner lost as dropped, so the
// retry leaves their messages out. The manage goroutine stops their
// readers at its next check.
func (r *Runner) verifyLeases(ctx context.Context, items []item) error {
	rows, _, err := r.readLeases(ctx)
	if err != nil {
		return err
	}
	for _, it := range items {
		l := it.lease
		if l == nil || l.dropped.Load() {
			continue
		}
		if row, ok := rows[l.key]; !ok || row.generation != l.gen {
			l.dropped.Store(true)
		}
	}
	return nil
}

// setLeaseFailing records whether the lease checks fail (see Ready).
func (r *Runner) setLeaseFailing(failing bool) {
	r.mu.Lock()
	r.leaseFailing = failing
	r.mu.Unlock()
}
