package suite

import (
	"bufio"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Incarnation is what one run of a projector process printed (log lines
// in slog's text format).
type Incarnation struct {
	Name   string
	Output string
}

// HandOver is one partition changing hands, timed from the projectors'
// own log lines: the window in which no runner was applying it.
type HandOver struct {
	Projection, Topic string
	Partition         int
	From, To          string    // process names; To is empty while Open
	Stopped           time.Time // its owner stopped applying it
	// Gap runs from Stopped to the next owner's first commit of the
	// partition ("partition applying") or, when nothing was waiting to be
	// applied, to its first fetch ("partition caught up", timed when the
	// fetch was sent); while Open, to the last line read.
	Gap  time.Duration
	Open bool
}

func (h HandOver) String() string {
	to := h.To
	if h.Open {
		to = "(nobody yet)"
	}
	return fmt.Sprintf("%s %s/%d %s → %s in %s", h.Projection, h.Topic, h.Partition, h.From, to, h.Gap.Round(time.Millisecond))
}

// HandOvers times the hand-overs that began in [from, to]: those of a
// partition that a running projector released to another ("partition
// handed over", the window starting when it stopped applying it), and
// those of every partition the stopped incarnation held when it was sent
// SIGTERM at stopAt (the window starting at the signal: conservative, the
// release follows it by a few milliseconds). Each ends at the first
// "partition applying" line of the partition (a runner's first commit
// after acquiring it) printed after the window started, by any
// incarnation (a runner that handed a partition over may get it back at
// its next check, when the member it went to is leaving too), or at its
// first "partition caught up" line (the next owner's first fetch found
// nothing to apply: the window ends when that fetch was sent). Stopped
// may be nil (no process was stopped). The result is in the order the
// windows started.
func HandOvers(stopped *Incarnation, stopAt time.Time, running []Incarnation, from, to time.Time) []HandOver {
	type source struct {
		name  string
		lines []leaseLine
	}
	var all []source
	var last time.Time // of any line read
	add := func(inc Incarnation) {
		lines, end := parseLeaseLines(inc.Output)
		all = append(all, source{inc.Name, lines})
		if end.After(last) {
			last = end
		}
	}
	if stopped != nil {
		add(*stopped)
	}
	for _, inc := range running {
		add(inc)
	}

	type start struct {
		key  leaseKey
		from string
		at   time.Time
		skip int // the source that cannot close it (the stopped one), or -1
	}
	var starts []start
	if stopped != nil {
		for _, k := range heldAtEnd(all[0].lines) {
			starts = append(starts, start{k, stopped.Name, stopAt, 0})
		}
	}
	for _, s := range all {
		for _, l := range s.lines {
			if l.msg != "partition handed over" {
				continue
			}
			at := l.at.Add(-l.took)
			if at.Before(from) || at.After(to) {
				continue
			}
			starts = append(starts, start{l.key, s.name, at, -1})
		}
	}
	slices.SortStableFunc(starts, func(a, b start) int { return a.at.Compare(b.at) })

	var out []HandOver
	for _, st := range starts {
		h := HandOver{Projection: st.key.projection, Topic: st.key.topic, Partition: st.key.partition, From: st.from, Stopped: st.at, Open: true}
		var first time.Time
		for i, s := range all {
			if i == st.skip {
				continue
			}
			for _, l := range s.lines {
				if (l.msg == "partition applying" || l.msg == "partition caught up") && l.key == st.key && !l.at.Before(st.at) {
					end := l.at
					if l.msg == "partition caught up" {
						end = latest(st.at, l.at.Add(-l.waited))
					}
					if first.IsZero() || end.Before(first) {
						first, h.To = end, s.name
					}
					break
				}
			}
		}
		if first.IsZero() {
			h.Gap = max(last.Sub(st.at), 0)
		} else {
			h.Gap, h.Open = first.Sub(st.at), false
		}
		out = append(out, h)
	}
	return out
}

type leaseKey struct {
	projection, topic string
	partition         int
}

type leaseLine struct {
	at     time.Time
	msg    string
	key    leaseKey
	took   time.Duration // "partition handed over": since it stopped applying
	waited time.Duration // "partition caught up": since its fetch was sent
}

// heldAtEnd replays one incarnation's lease lines and returns the
// partitions it held at the end, sorted.
func heldAtEnd(lines []leaseLine) []leaseKey {
	held := map[leaseKey]bool{}
	for _, l := range lines {
		switch l.msg {
		case "partition acquired":
			held[l.key] = true
		case "partition handed over", "partition lease lost to another member":
			delete(held, l.key)
		case "member session lost; rejoining as a new member":
			for k := range held {
				if k.projection == l.key.projection {
					delete(held, k)
				}
			}
		}
	}
	keys := make([]leaseKey, 0, len(held))
	for k := range held {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b leaseKey) int {
		if c := strings.Compare(a.projection, b.projection); c != 0 {
			return c
		}
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return a.partition - b.partition
	})
	return keys
}

// parseLeaseLines picks the lease lines out of a process's output, and
// the time of its last line; other lines, and lines that do not parse,
// are skipped.
func parseLeaseLines(out string) (lines []leaseLine, last time.Time) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := logfmt(sc.Text())
		at, err := time.Parse(time.RFC3339Nano, f["time"])
		if err != nil {
			continue
		}
		last = at
		switch f["msg"] {
		case "partition acquired", "partition handed over", "partition lease lost to another member",
			"partition applying", "partition caught up", "member session lost; rejoining as a new member":
		default:
			continue
		}
		l := leaseLine{at: at, msg: f["msg"], key: leaseKey{projection: f["projection"], topic: f["topic"]}}
		if p, ok := f["partition"]; ok {
			if l.key.partition, err = strconv.Atoi(p); err != nil {
				continue
			}
		}
		if s, ok := f["took"]; ok {
			if l.took, err = time.ParseDuration(s); err != nil {
				continue
			}
		}
		if s, ok := f["fetch_waited"]; ok {
			if l.waited, err = time.ParseDuration(s); err != nil {
				continue
			}
		}
		lines = append(lines, l)
	}
	return lines, last
}

// logfmt splits a line of slog's text format into its keys and values
// (quoted values unquoted).
func logfmt(line string) map[string]string {
	f := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		f[key] = val
		line = rest
	}
	return f
}
