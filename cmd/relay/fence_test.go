package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/application"
)

// backwards lists the aggregates whose versions went backwards on the
// topic in a way no redelivery explains. A redelivery (a new owner
// publishing again what its predecessor published but did not delete)
// steps back to some version v and then repeats v, v+1, … without a gap
// until it has caught up with the newest version received before the
// step: that is what at-least-once delivery allows. A stale batch from
// a paused relay is different: it repeats old versions after the new
// owner has moved on, and the next new version, or the end of the
// stream, comes before it caught up. A redelivery may itself be
// redelivered: an owner stopped during its replay leaves the next owner
// to step back again, to a version the replay had already reached, and
// replay from there; that one too must catch up.
func (c *checker) backwards() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, seq := range c.seq {
		if p := stepsBack(seq); p != "" {
			out = append(out, fmt.Sprintf("aggregate %s: %s (received %v)", id, p, short(seq)))
		}
	}
	return out
}

// stepsBack checks one aggregate's received versions; see backwards.
func stepsBack(seq []uint64) string {
	var (
		top       uint64 // newest version received
		any       bool
		replaying bool
		expect    uint64 // next version of the replay in progress
	)
	for i, v := range seq {
		switch {
		case replaying && v < expect:
			expect = v + 1 // a redelivery of the redelivery
		case replaying && v != expect:
			return fmt.Sprintf("at %d: version %d during a redelivery that had reached %d of %d", i, v, expect-1, top)
		case replaying:
			expect++
			replaying = expect <= top
		case any && v <= top:
			expect = v + 1
			replaying = expect <= top
		default:
			top, any = v, true
		}
	}
	if replaying {
		return fmt.Sprintf("ends in a redelivery that reached %d of %d", expect-1, top)
	}
	return ""
}

func TestStepsBack(t *testing.T) {
	for _, tc := range []struct {
		seq []uint64
		bad bool
	}{
		{seq: []uint64{0, 1, 2, 3}},
		{seq: []uint64{0, 1, 2, 1, 2, 3}},            // redelivery, then new
		{seq: []uint64{0, 1, 2, 0, 1, 2}},            // redelivery at the end
		{seq: []uint64{0, 1, 2, 2, 3}},               // last one again
		{seq: []uint64{0, 1, 2, 3, 1, 2}, bad: true}, // stale tail
		{seq: []uint64{0, 1, 2, 3, 1, 2, 4}, bad: true},
		{seq: []uint64{0, 1, 2, 3, 1, 3}, bad: true},
		{seq: []uint64{0, 1, 2, 3, 4, 1, 2, 3, 2, 3, 4, 5}},      // a redelivery redelivered
		{seq: []uint64{0, 1, 2, 3, 4, 1, 2, 3, 2, 3}, bad: true}, // ... that never caught up
		{seq: []uint64{0, 1, 2, 3, 4, 1, 2, 0, 1, 2, 4}, bad: true},
	} {
		if got := stepsBack(tc.seq); (got != "") != tc.bad {
			t.Errorf("stepsBack(%v) = %q, want bad %v", tc.seq, got, tc.bad)
		}
	}
}

// fenceErrors reads a relay's esflow_relay_errors_total{op="fence"}.
func fenceErrors(addr string) (float64, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "esflow_relay_errors_total{") && strings.Contains(line, `op="fence"`) {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return 0, sc.Err()
}

// TestPausedRelayIsFenced stops the active relay with SIGSTOP while it
// waits for the answer to a produce request (the broker refuses that
// request with a retryable error and stops the relay before answering,
// so the relay holds a batch it will send again), lets the standby take
// over once PostgreSQL dropped the stopped relay's lock session
// (idle_session_timeout = lease) and publish later events of the same
// aggregates, then resumes the stopped relay. It must not publish its
// stale batch: an independent consumer checks that no aggregate's
// versions go backwards, beyond redeliveries that catch up, and that
// nothing committed is missing. The roles then swap, for several cycles.
func TestPausedRelayIsFenced(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) { testPausedRelayIsFenced(t, mode) })
	}
}

func testPausedRelayIsFenced(t *testing.T, mode application.OutboxMode) {
	dbURL := pgtest.NewDatabase(t)
	b := startBroker(t, "127.0.0.1:0")
	app := newApp(t, dbURL, mode)
	l := newLedger()
	c := startChecker(t, b.Addr())

	const lease = "2s"
	addrs := []string{proctest.FreeAddr(t), proctest.FreeAddr(t)}
	relays := []*proctest.Process{
		startRelay(t, "R0", dbURL, b.Addr(), addrs[0], "-lease", lease, "-batch-size", "50", "-outbox-mode", string(mode)),
	}
	waitMetric(t, relays[0], addrs[0], "esflow_relay_active", 1, 15*time.Second)
	relays = append(relays, startRelay(t, "R1", dbURL, b.Addr(), addrs[1], "-lease", lease, "-batch-size", "50", "-outbox-mode", string(mode)))
	waitMetric(t, relays[1], addrs[1], "esflow_relay_active", 0, 15*time.Second)

	stopWriters := startWriters(t, app, l, 3)
	cycles := 3
	if testing.Short() {
		cycles = 2
	}
	fencedBefore := []float64{0, 0}
	for cycle := range cycles {
		a, s := cycle%2, 1-cycle%2
		active, standby := relays[a], relays[s]
		waitMetric(t, active, addrs[a], "esflow_relay_active", 1, 15*time.Second)

		stopped := make(chan struct{})
		b.FailNextProduce(func() {
			_ = syscall.Kill(active.Pid(), syscall.SIGSTOP)
			close(stopped)
		})
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			t.Fatalf("cycle %d: %s sent no produce request", cycle, active.Name())
		}
		took := waitMetric(t, standby, addrs[s], "esflow_relay_active", 1, 30*time.Second)
		base, _, _ := metric(addrs[s], "esflow_relay_published_total")
		proctest.Eventually(t, 30*time.Second, 20*time.Millisecond, "the new owner publishes", func() (bool, string) {
			v, _, err := metric(addrs[s], "esflow_relay_published_total")
			return err == nil && v >= base+100, fmt.Sprintf("published %v (from %v), err %v", v, base, err)
		})
		if err := active.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		// The resumed relay finds its lease gone: its next produce
		// request is not sent, and it becomes a standby.
		proctest.Eventually(t, 30*time.Second, 20*time.Millisecond, active.Name()+" fenced", func() (bool, string) {
			n, err := fenceErrors(addrs[a])
			return err == nil && n > fencedBefore[a], fmt.Sprintf("fence errors %v, err %v", n, err)
		})
		fencedBefore[a], _ = fenceErrors(addrs[a])
		waitMetric(t, active, addrs[a], "esflow_relay_active", 0, 15*time.Second)
		t.Logf("cycle %d: %s stopped mid-publish; %s active %s later; %s fenced after resuming",
			cycle, active.Name(), standby.Name(), took.Round(time.Millisecond), active.Name())
	}
	stopWriters()
	committed := l.snapshot()
	r := converge(t, app, c, nil, committed, 60*time.Second)
	if bad := c.backwards(); len(bad) > 0 {
		t.Errorf("%d aggregates went backwards on the topic, first: %v", len(bad), firstN(bad, 5))
	}
	t.Logf("events written: %d (%d aggregates); received %d; duplicates %d", total(committed), len(committed), r.received, r.duplicates)
}
