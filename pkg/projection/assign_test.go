package projection

import (
	"fmt"
	"testing"
)

// leaseRows returns the rows of topics' partitions (n each), owned as
// owners says (partition index in topic order -> member; absent: free).
func leaseRows(topics []string, n int, owners map[partitionKey]int64) map[partitionKey]leaseRow {
	rows := map[partitionKey]leaseRow{}
	for _, t := range topics {
		for p := range n {
			k := partitionKey{t, p}
			rows[k] = leaseRow{key: k, owner: owners[k]}
		}
	}
	return rows
}

// apply makes the assignment the rows' owners, as the hand-overs would.
func apply(rows map[partitionKey]leaseRow, want map[partitionKey]int64) (moved int) {
	for k, row := range rows {
		if row.owner != want[k] {
			moved++
			row.owner = want[k]
			rows[k] = row
		}
	}
	return moved
}

// checkBalanced fails unless every member has, per topic, the same
// number of partitions give or take one.
func checkBalanced(t *testing.T, want map[partitionKey]int64, members []int64) {
	t.Helper()
	per := map[string]map[int64]int{}
	for k, m := range want {
		if per[k.topic] == nil {
			per[k.topic] = map[int64]int{}
		}
		per[k.topic][m]++
	}
	for topic, counts := range per {
		lo, hi := 1<<30, 0
		for _, m := range members {
			lo, hi = min(lo, counts[m]), max(hi, counts[m])
		}
		if hi-lo > 1 {
			t.Errorf("topic %s: members hold %v partitions, want a spread of at most 1", topic, counts)
		}
	}
}

// The assignment is balanced per topic and moves only what a change of
// membership must: a member that joins takes its share and nothing else
// moves; one that leaves gives only its own partitions away. A surge
// roll of two replicas (join a third, then stop an old one) moves each
// partition at most once per step.
func TestAssignMovesOnlyWhatMembershipChanges(t *testing.T) {
	topics := []string{"esflow.Example", "esflow.World"}
	const n = 8
	rows := leaseRows(topics, n, nil)
	a, b, c := int64(30), int64(10), int64(20)

	want := assign(rows, []int64{a, b})
	checkBalanced(t, want, []int64{a, b})
	if moved := apply(rows, want); moved != 2*n {
		t.Fatalf("first assignment took %d of %d free partitions", moved, 2*n)
	}
	if again := assign(rows, []int64{b, a}); fmt.Sprint(again) != fmt.Sprint(want) {
		t.Fatalf("assignment depends on the members' order: %v, then %v", want, again)
	}

	// Surge roll: c joins, then a leaves.
	want = assign(rows, []int64{a, b, c})
	checkBalanced(t, want, []int64{a, b, c})
	share := 0
	for k, m := range want {
		if m == c {
			share++
		} else if m != rows[k].owner {
			t.Errorf("%v moved from %d to %d when %d joined", k, rows[k].owner, m, c)
		}
	}
	if moved := apply(rows, want); moved != share {
		t.Errorf("c joining moved %d partitions, its share is %d", moved, share)
	}
	held := 0
	for _, row := range rows {
		if row.owner == a {
			held++
		}
	}
	want = assign(rows, []int64{b, c})
	checkBalanced(t, want, []int64{b, c})
	for k, m := range want {
		if rows[k].owner != a && m != rows[k].owner {
			t.Errorf("%v moved from %d to %d when %d left", k, rows[k].owner, m, a)
		}
	}
	if moved := apply(rows, want); moved != held {
		t.Errorf("a leaving moved %d partitions, it held %d", moved, held)
	}

	// A dead owner's partitions (not among the members) are free.
	rows = leaseRows(topics, n, map[partitionKey]int64{{"esflow.World", 0}: 99})
	want = assign(rows, []int64{b})
	if want[partitionKey{"esflow.World", 0}] != b {
		t.Errorf("a dead member's partition not reassigned: %v", want)
	}
}
