package proccpu

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestCPU: a busy loop shows up in Self and in PIDs(own pid), and a child
// process's time in Named(its command name), counted from zero.
func TestCPU(t *testing.T) {
	self0, pid0 := Self(), PIDs(os.Getpid())
	for deadline := time.Now().Add(10 * time.Second); Self()-self0 < 100*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatalf("Self grew by %v in a 10 s busy loop", Self()-self0)
		}
	}
	// /proc counts in 10 ms ticks.
	if d := PIDs(os.Getpid()) - pid0; d < 50*time.Millisecond {
		t.Errorf("PIDs(self) grew by %v while Self grew by 100 ms or more", d)
	}
	if PIDs(-1) != 0 {
		t.Error("a process that does not exist counts")
	}
	before := Named("sh")
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cmd := exec.Command(sh, "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	var child time.Duration
	for deadline := time.Now().Add(10 * time.Second); child == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		child = PIDs(cmd.Process.Pid)
	}
	// Read after the child's own figure: CPU time only grows.
	if got := Named("sh").Since(before); child == 0 || got < child {
		t.Errorf("Named(sh) grew by %v, less than the new child's own %v", got, child)
	}
}
