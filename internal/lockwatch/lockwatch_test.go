package lockwatch

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestLostOnFailedCheck(t *testing.T) {
	var checks atomic.Int32
	var gotFailed atomic.Value
	lost, release := Watch(time.Millisecond, time.Second, func(context.Context) error {
		if checks.Add(1) == 3 {
			return errors.New("lock gone")
		}
		return nil
	}, func(failed bool) { gotFailed.Store(failed) })
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("lost not closed after a failed check")
	}
	release()
	release()
	if f, _ := gotFailed.Load().(bool); !f {
		t.Error("unlock was not told that a check failed")
	}
	if n := checks.Load(); n != 3 {
		t.Errorf("%d checks, want 3 (none after the failed one)", n)
	}
}

func TestReleaseWhileHeld(t *testing.T) {
	unlocks := 0
	lost, release := Watch(time.Hour, time.Second, func(context.Context) error {
		t.Error("checked before the interval passed")
		return nil
	}, func(failed bool) {
		unlocks++
		if failed {
			t.Error("unlock told a check failed")
		}
	})
	select {
	case <-lost:
		t.Fatal("lost closed while held")
	default:
	}
	release()
	release()
	select {
	case <-lost:
	default:
		t.Error("lost still open after release")
	}
	if unlocks != 1 {
		t.Errorf("unlock ran %d times, want 1", unlocks)
	}
}
