package broker

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A member that dies while its JoinGroup is pending must not keep its
// partitions: the reaper removes it after its session timeout, as a real
// broker would, and the surviving consumer reads every partition.
func TestDeadJoinerIsReaped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Start(ctx, Config{Partitions: 4, Topics: []string{"reap"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()

	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: "reap", Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond}
	defer func() { _ = w.Close() }()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{b.Addr()}, GroupID: "g", Topic: "reap", StartOffset: kafka.FirstOffset,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
		MaxWait: 100 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadMessage(ctx); err != nil { // joined and assigned
		t.Fatal(err)
	}

	// A second member joins and dies before the answer; the group
	// rebalances with it and settles with two members.
	joinAndDie(t, b.Addr(), "g", "reap")
	c := &kafka.Client{Addr: kafka.TCP(b.Addr())}
	members := func() (string, int) {
		d, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{"g"}})
		if err != nil || len(d.Groups) != 1 {
			t.Fatalf("describe group: %v", err)
		}
		return d.Groups[0].GroupState, len(d.Groups[0].Members)
	}
	for {
		if state, n := members(); state == "Stable" && n == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the group never took the dying member in")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Every partition must be read again: one message per partition.
	msgs := make([]kafka.Message, 4)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: []byte{byte(i)}}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for len(seen) < 4 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("partitions read so far %v: %v (the dead member kept the rest)", seen, err)
		}
		seen[m.Partition] = true
	}
	if state, n := members(); n != 1 {
		t.Errorf("group %s with %d members, want the survivor alone", state, n)
	}
}

// joinAndDie joins group as a new member over a raw connection (JoinGroup
// v5: first to get a member id, then with it) and closes the connection
// without waiting for the second answer.
func joinAndDie(t *testing.T, addr, group, topic string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	meta := (&kmsg.ConsumerMemberMetadata{Topics: []string{topic}}).AppendTo(nil)
	join := func(member string) *kmsg.JoinGroupRequest {
		q := kmsg.NewPtrJoinGroupRequest()
		q.Version = 5
		q.Group, q.MemberID, q.ProtocolType = group, member, "consumer"
		q.SessionTimeoutMillis, q.RebalanceTimeoutMillis = 6000, 6000
		q.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta}}
		return q
	}
	send(t, conn, 1, join(""))
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = 5
	if err := resp.ReadFrom(receive(t, conn)); err != nil {
		t.Fatal(err)
	}
	if resp.MemberID == "" {
		t.Fatalf("no member id in the first JoinGroup answer (error code %d)", resp.ErrorCode)
	}
	send(t, conn, 2, join(resp.MemberID))
}

func send(t *testing.T, conn net.Conn, corr int32, q kmsg.Request) {
	t.Helper()
	var buf []byte
	buf = binary.BigEndian.AppendUint32(buf, 0) // size, below
	buf = binary.BigEndian.AppendUint16(buf, uint16(q.Key()))
	buf = binary.BigEndian.AppendUint16(buf, uint16(q.GetVersion()))
	buf = binary.BigEndian.AppendUint32(buf, uint32(corr))
	buf = binary.BigEndian.AppendUint16(buf, 4)
	buf = append(buf, "test"...)
	buf = q.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	if _, err := conn.Write(buf); err != nil {
		t.Fatal(err)
	}
}

// receive reads one response and returns its body (after the
// correlation id).
func receive(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	return body[4:]
}

func TestReaperThresholds(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newReaper()
	r.now = func() time.Time { return now }
	r.alive("g", "live", 10*time.Second, 10*time.Second)
	r.alive("g", "dead", 10*time.Second, 10*time.Second)
	if got := r.expired("g", true, []string{"live", "dead", "unseen"}); len(got) != 0 {
		t.Fatalf("expired at once: %v", got)
	}
	now = now.Add(11 * time.Second)
	r.alive("g", "live", 0, 0) // a heartbeat
	if got := r.expired("g", true, []string{"live", "dead", "unseen"}); len(got) != 0 {
		t.Fatalf("expired within session+grace: %v", got)
	}
	now = now.Add(2 * time.Second) // dead silent for 13s > 10s+2s
	if got := r.expired("g", true, []string{"live", "dead"}); len(got) != 1 || got[0] != "dead" {
		t.Fatalf("stable group: expired %v, want [dead]", got)
	}
	// While rebalancing a live member may wait in JoinGroup for its
	// rebalance timeout plus the client's 5s: 13s of silence is not death.
	if got := r.expired("g", false, []string{"dead"}); len(got) != 0 {
		t.Fatalf("rebalancing group: expired %v after 13s", got)
	}
	now = now.Add(5 * time.Second) // 18s > 10s+5s+2s
	if got := r.expired("g", false, []string{"dead"}); len(got) != 1 {
		t.Fatalf("rebalancing group: expired %v after 18s, want [dead]", got)
	}
	r.forget("g", "dead")
	if got := r.expired("g", true, []string{"dead"}); len(got) != 0 {
		t.Fatalf("a forgotten member restarts its clock: %v", got)
	}
}
