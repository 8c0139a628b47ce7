package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ReapStale stops and removes clusters in the temporary directory whose
// directory name starts with prefix and whose owning process is gone,
// such as those of a test binary killed before it could clean up. A
// directory is stale when the pid in its owner file is dead or, without
// an owner file, when it is older than a minute (another process may be
// creating it right now). Errors are ignored: reaping is best effort.
func ReapStale(prefix string) {
	if prefix == "" {
		prefix = defaultDirPrefix
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			fi, serr := os.Stat(dir)
			if serr != nil || !fi.IsDir() || time.Since(fi.ModTime()) < time.Minute {
				continue
			}
		} else if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr != nil || alive(pid) {
			continue
		}
		killStalePostmaster(dir)
		_ = os.RemoveAll(dir)
	}
}

// killStalePostmaster stops the postmaster of a stale cluster, after
// checking that the pid really is a postgres serving that directory.
func killStalePostmaster(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || !alive(pid) {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
		return // pid reused by an unrelated process
	}
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	for i := 0; i < 50 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
