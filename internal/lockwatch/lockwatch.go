// Package lockwatch keeps a held lock under watch: the part of the SQL
// outbox backends' Locker that is the same whatever the lock is (an
// advisory lock, a named lock, a lease row).
package lockwatch

import (
	"context"
	"sync"
	"time"
)

// Watch checks a held lock every interval, giving check a context that
// ends after timeout. The first failed check closes lost and ends the
// watch. release stops the watch, closes lost if it is still open, and
// then calls unlock, telling it whether a check failed (the lock may be
// gone already, or its session unusable). release runs once however often
// it is called, and returns after unlock did.
func Watch(interval, timeout time.Duration, check func(context.Context) error, unlock func(failed bool)) (lost <-chan struct{}, release func()) {
	lostCh := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	var lostOnce sync.Once
	markLost := func() { lostOnce.Do(func() { close(lostCh) }) }
	var failed bool // set by the watcher before it exits; read after done
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := check(ctx)
			cancel()
			if err != nil {
				failed = true
				markLost()
				return
			}
		}
	}()
	var relOnce sync.Once
	release = func() {
		relOnce.Do(func() {
			close(stop)
			<-done
			markLost()
			unlock(failed)
		})
	}
	return lostCh, release
}
