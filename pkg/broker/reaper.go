package broker

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Who needs this. esflow's own services no longer join consumer groups
// (the projection runner leases partitions in its read-model database and
// reads them with partition readers; Redrive too), so none of them
// depends on it. It stays for the other group consumers a developer
// attaches to the embedded broker (kcat -G, a service under test, the
// benchmarks' and tests' group readers): with the newest kfake the module
// proxy serves (v0.0.0-20260918054303-01f206a7e32c, the one in go.mod),
// TestDeadJoinerIsReaped with the reaper switched off still wedged the
// group in one of three runs.
//
// A consumer-group member that dies while the coordinator is answering
// its JoinGroup (a kill -9 during a rebalance) never gets a session timer
// in kfake: the answer cannot be delivered, so the member is never
// considered alive, but the group's leader still assigns it partitions
// and the group turns Stable with them owned by nobody, for good. A real
// Kafka broker expires such a member after its session timeout. The
// reaper does the same from outside kfake: it watches every request that
// proves a member alive, and removes (LeaveGroup on its behalf) a member
// that has sent nothing for longer than its session timeout (or, during a
// rebalance, its rebalance timeout plus the client's margin) plus
// reapGrace; dead members also stall rebalances in kfake, each new join
// restarting the wait for them.
const (
	reapInterval = time.Second
	reapGrace    = 2 * time.Second
	// defaultSession is assumed for members seen only in DescribeGroups.
	defaultSession = 10 * time.Second
)

type memberKey struct{ group, member string }

type memberSeen struct {
	last      time.Time
	session   time.Duration
	rebalance time.Duration
}

type reaper struct {
	mu   sync.Mutex
	seen map[memberKey]memberSeen
	now  func() time.Time
}

func newReaper() *reaper {
	return &reaper{seen: make(map[memberKey]memberSeen), now: time.Now}
}

// watch registers observers (they never handle a request) on c.
func (r *reaper) watch(c *kfake.Cluster) {
	observe := func(req kmsg.Request) (kmsg.Response, error, bool) {
		switch q := req.(type) {
		case *kmsg.JoinGroupRequest:
			r.alive(q.Group, q.MemberID, time.Duration(q.SessionTimeoutMillis)*time.Millisecond,
				time.Duration(q.RebalanceTimeoutMillis)*time.Millisecond)
		case *kmsg.SyncGroupRequest:
			r.alive(q.Group, q.MemberID, 0, 0)
		case *kmsg.HeartbeatRequest:
			r.alive(q.Group, q.MemberID, 0, 0)
		case *kmsg.OffsetCommitRequest:
			r.alive(q.Group, q.MemberID, 0, 0)
		case *kmsg.LeaveGroupRequest:
			r.forget(q.Group, q.MemberID)
			for _, m := range q.Members {
				r.forget(q.Group, m.MemberID)
			}
		}
		return nil, nil, false
	}
	for _, k := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		c.ControlKey(int16(k), observe)
	}
}

func (r *reaper) alive(group, member string, session, rebalance time.Duration) {
	if member == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := memberKey{group, member}
	s := r.seen[k]
	s.last = r.now()
	if session > 0 {
		s.session = session
	}
	if rebalance > 0 {
		s.rebalance = rebalance
	}
	r.seen[k] = s
}

func (r *reaper) forget(group, member string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.seen, memberKey{group, member})
}

// expired returns the members of a group that have been silent for
// longer than their session timeout plus reapGrace (stable) or, while
// the group rebalances, than their rebalance timeout plus the 5 s a
// client waits on top before it sends a new JoinGroup (a live member
// waiting in JoinGroup sends nothing meanwhile). A member seen for the
// first time starts its clock now.
func (r *reaper) expired(group string, stable bool, members []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []string
	for _, m := range members {
		k := memberKey{group, m}
		s, ok := r.seen[k]
		if !ok {
			r.seen[k] = memberSeen{last: now}
			continue
		}
		limit := s.session
		if limit == 0 {
			limit = defaultSession
		}
		if !stable {
			rebalance := s.rebalance
			if rebalance == 0 {
				rebalance = defaultSession
			}
			limit = max(limit, rebalance+5*time.Second)
		}
		if now.Sub(s.last) > limit+reapGrace {
			out = append(out, m)
		}
	}
	return out
}

// run checks the groups every reapInterval until ctx is done.
func (r *reaper) run(ctx context.Context, addr string) {
	c := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 5 * time.Second}
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.sweep(ctx, c)
	}
}

func (r *reaper) sweep(ctx context.Context, c *kafka.Client) {
	groups, err := c.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err != nil || len(groups.Groups) == 0 {
		return
	}
	ids := make([]string, 0, len(groups.Groups))
	for _, g := range groups.Groups {
		ids = append(ids, g.GroupID)
	}
	desc, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: ids})
	if err != nil {
		return
	}
	for _, g := range desc.Groups {
		if g.Error != nil || g.GroupState == "Empty" || g.GroupState == "Dead" {
			continue
		}
		members := make([]string, 0, len(g.Members))
		for _, m := range g.Members {
			members = append(members, m.MemberID)
		}
		dead := r.expired(g.GroupID, g.GroupState == "Stable", members)
		if len(dead) == 0 {
			continue
		}
		req := &kafka.LeaveGroupRequest{GroupID: g.GroupID}
		for _, m := range dead {
			req.Members = append(req.Members, kafka.LeaveGroupRequestMember{ID: m})
		}
		if _, err := c.LeaveGroup(ctx, req); err == nil {
			for _, m := range dead {
				r.forget(g.GroupID, m)
			}
		}
	}
}
