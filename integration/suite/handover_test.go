package suite

import (
	"strings"
	"testing"
	"time"
)

// A rolling restart as the projectors log it: projector-0 is stopped
// holding World partitions 0 and 1 and Example partition 3 (it had handed
// World partition 2 over earlier), projector-1 takes them (Example 3 with
// nothing to apply), then hands World partition 1 to the restarted
// projector-0. HandOvers must time every window from its start to the
// next owner's first commit, or to its first fetch when that found
// nothing to apply, and report one never closed.
func TestHandOversTimesEachWindow(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		ts, err := time.Parse(time.RFC3339Nano, "2026-12-03T10:00:"+s+"Z")
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	lines := func(ls ...string) string { return strings.Join(ls, "\n") + "\n" }
	stopped := Incarnation{Name: "projector-0", Output: lines(
		`time=2026-12-03T10:00:00.000Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=0 generation=2 offset=1`,
		`time=2026-12-03T10:00:00.000Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=1 generation=2 offset=1`,
		`time=2026-12-03T10:00:00.001Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=2 generation=2 offset=1`,
		`time=2026-12-03T10:00:00.001Z level=INFO msg="partition acquired" projection=worlds topic=esflow.Example partition=3 generation=2 offset=1`,
		`time=2026-12-03T10:00:00.005Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=0 offset=1 first_commit_after=5ms`,
		`time=2026-12-03T10:00:01.000Z level=INFO msg="partition handed over" projection=worlds topic=esflow.World partition=2 generation=2 took=20ms`,
		`time=2026-12-03T10:00:01.500Z level=INFO msg="a line with = and \"quotes\"" projection=worlds`,
		`time=2026-12-03T10:00:05.010Z level=INFO msg="partitions handed over at shutdown" projection=worlds partitions=2 member=7`,
	)}
	survivor := Incarnation{Name: "projector-1", Output: lines(
		`time=2026-12-03T10:00:01.010Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=2 generation=3 offset=9`,
		`time=2026-12-03T10:00:01.030Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=2 offset=9 first_commit_after=20ms`,
		`time=2026-12-03T10:00:05.020Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=0 generation=3 offset=40`,
		`time=2026-12-03T10:00:05.020Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=1 generation=3 offset=41`,
		`time=2026-12-03T10:00:05.020Z level=INFO msg="partition acquired" projection=worlds topic=esflow.Example partition=3 generation=3 offset=4`,
		`time=2026-12-03T10:00:05.280Z level=INFO msg="partition caught up" projection=worlds topic=esflow.Example partition=3 offset=4 fetch_waited=250ms`,
		`time=2026-12-03T10:00:05.090Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=1 offset=41 first_commit_after=70ms`,
		`time=2026-12-03T10:00:05.300Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=0 offset=40 first_commit_after=280ms`,
		`time=2026-12-03T10:00:06.500Z level=INFO msg="partition handed over" projection=worlds topic=esflow.World partition=1 generation=3 took=100ms`,
		`time=2026-12-03T10:00:06.600Z level=INFO msg="partition handed over" projection=worlds topic=esflow.World partition=0 generation=3 took=5ms`,
		`time=2026-12-03T10:00:07.000Z level=INFO msg="a later line" projection=worlds`,
	)}
	restarted := Incarnation{Name: "projector-0", Output: lines(
		`time=2026-12-03T10:00:06.450Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=1 generation=4 offset=50`,
		`time=2026-12-03T10:00:06.700Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=1 offset=50 first_commit_after=250ms`,
	)}

	got := HandOvers(&stopped, at("05.000"), []Incarnation{survivor, restarted}, at("05.000"), at("07.000"))
	want := []HandOver{
		{Projection: "worlds", Topic: "esflow.Example", Partition: 3, From: "projector-0", To: "projector-1", Stopped: at("05.000"), Gap: 30 * time.Millisecond},
		{Projection: "worlds", Topic: "esflow.World", Partition: 0, From: "projector-0", To: "projector-1", Stopped: at("05.000"), Gap: 300 * time.Millisecond},
		{Projection: "worlds", Topic: "esflow.World", Partition: 1, From: "projector-0", To: "projector-1", Stopped: at("05.000"), Gap: 90 * time.Millisecond},
		{Projection: "worlds", Topic: "esflow.World", Partition: 1, From: "projector-1", To: "projector-0", Stopped: at("06.400"), Gap: 300 * time.Millisecond},
		{Projection: "worlds", Topic: "esflow.World", Partition: 0, From: "projector-1", Stopped: at("06.595"), Gap: 405 * time.Millisecond, Open: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d hand-overs, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("hand-over %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}

	// A runner that hands a partition over and gets it back (the member
	// it went to left too) closes the window itself.
	back := Incarnation{Name: "projector-1", Output: lines(
		`time=2026-12-03T10:00:05.100Z level=INFO msg="partition handed over" projection=worlds topic=esflow.World partition=7 generation=38 took=80ms`,
		`time=2026-12-03T10:00:05.120Z level=INFO msg="partition acquired" projection=worlds topic=esflow.World partition=7 generation=39 offset=3400`,
		`time=2026-12-03T10:00:05.160Z level=INFO msg="partition applying" projection=worlds topic=esflow.World partition=7 offset=3400 first_commit_after=40ms`,
	)}
	if hs := HandOvers(nil, time.Time{}, []Incarnation{back}, at("05.000"), at("06.000")); len(hs) != 1 || hs[0].Open || hs[0].Gap != 140*time.Millisecond {
		t.Errorf("hand-over taken back: %v, want one closed in 140ms", hs)
	}

	// Partition 2's earlier hand-over is outside the window; inside one
	// that covers it, it is timed from when projector-0 stopped applying it.
	early := HandOvers(nil, time.Time{}, []Incarnation{stopped, survivor}, at("00.500"), at("01.500"))
	if len(early) != 1 || early[0].Partition != 2 || early[0].Gap != 50*time.Millisecond || early[0].To != "projector-1" {
		t.Errorf("early window: %v, want partition 2 to projector-1 in 50ms", early)
	}
}
