// Package proccpu reads the CPU time processes have used, for benchmarks
// that report where a workload's CPU went (the client, PostgreSQL, the
// broker) next to its rate. Linux only: other processes are read from
// /proc; on other systems they count zero.
package proccpu

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Self is the user plus system CPU time this process has used.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// PIDs adds up the user plus system CPU time of the given processes; a
// process that is gone counts zero.
func PIDs(pids ...int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		_, cpu, ok := stat(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if ok {
			total += cpu
		}
	}
	return total
}

// Group is the CPU time of a set of processes, by process id, at one
// moment.
type Group map[int]time.Duration

// Named returns the CPU time of every process whose command name is name
// (as /proc/<pid>/stat gives it: "postgres" for all of a PostgreSQL
// server's processes).
func Named(name string) Group {
	files, _ := filepath.Glob("/proc/[0-9]*/stat")
	g := Group{}
	for _, f := range files {
		if comm, cpu, ok := stat(f); ok && comm == name {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			if err == nil {
				g[pid] = cpu
			}
		}
	}
	return g
}

// Since is the CPU time g's processes used after prev was taken: a
// process new in g counts from zero, and one that exited in between (gone
// from g) counts nothing, its last moments being unknowable.
func (g Group) Since(prev Group) time.Duration {
	var total time.Duration
	for pid, cpu := range g {
		total += cpu - prev[pid]
	}
	return total
}

// stat reads a /proc/<pid>/stat file: the command name and utime+stime.
func stat(file string) (comm string, cpu time.Duration, ok bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", 0, false
	}
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 13 {
		return "", 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return string(b[open+1 : end]), time.Duration(utime+stime) * (time.Second / 100), true // USER_HZ
}
