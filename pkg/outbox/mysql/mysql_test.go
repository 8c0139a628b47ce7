package mysql_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore"
	mysqlstore "github.com/esflow/esflow/pkg/eventstore/mysql"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/mysql"
	"github.com/esflow/esflow/pkg/outbox/outboxtest"
)

func TestMain(m *testing.M) { os.Exit(mysqltest.Main(m)) }

func open(t *testing.T, url string, cfg mysql.Config) *mysql.Outbox {
	t.Helper()
	ctx := context.Background()
	store, err := mysqlstore.Open(ctx, url, mysqlstore.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	o, err := mysql.New(store, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := o.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := o.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	return o
}

func TestConformance(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
		return open(t, mysqltest.NewDatabase(t), mysql.Config{})
	})
}

func TestConformanceOtherTable(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
		return open(t, mysqltest.NewDatabase(t), mysql.Config{OutboxTable: "relay_outbox"})
	})
}

func TestConfigValidation(t *testing.T) {
	db, err := mysqlstore.OpenDB("mysql://nobody@127.0.0.1:1/none") // never connects
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := mysqlstore.New(db, mysqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []mysql.Config{{OutboxTable: "Bad"}, {OutboxTable: "x`y"}, {OutboxTable: "events"}, {OutboxTable: mysqlstore.MigrationsTable}} {
		if _, err := mysql.New(store, cfg); !errors.Is(err, eventstore.ErrInvalidIdentifier) {
			t.Errorf("New(%+v) = %v, want ErrInvalidIdentifier", cfg, err)
		}
	}
	if _, err := mysql.New(nil, mysql.Config{}); err == nil {
		t.Errorf("New(nil) succeeded")
	}
}

// TestLockFreedWhenHolderSessionDies: the server frees a named lock when
// the holding session ends, so a waiting replica takes the shard over,
// and the old holder sees lost closed.
func TestLockFreedWhenHolderSessionDies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := mysqltest.NewDatabase(t)
	cfg := mysql.Config{LockRetry: 20 * time.Millisecond, PingInterval: 50 * time.Millisecond}
	a, b := open(t, url, cfg), open(t, url, cfg)
	shard := outbox.Shard{Index: 0, Count: 2}
	lostA, releaseA, err := a.Lock(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	got := make(chan error, 1)
	var releaseB func()
	go func() {
		var err error
		_, releaseB, err = b.Lock(ctx, shard)
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("b locked a held shard: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// Kill a's session as a crash or a network cut would.
	var holder int64
	if err := a.Events().DB().QueryRowContext(ctx,
		`SELECT IS_USED_LOCK(CONCAT('esflow_outbox_', SHA1(CONCAT(DATABASE(), '/', ?))))`, mysql.LockName(a.Table(), shard)).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Events().DB().ExecContext(ctx, `KILL CONNECTION ?`, holder); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("b after a's session died: %v", err)
		}
		defer releaseB()
	case <-time.After(10 * time.Second):
		t.Fatal("b did not get the shard after a's session died")
	}
	select {
	case <-lostA:
	case <-time.After(10 * time.Second):
		t.Fatal("a's lost channel not closed after its session died")
	}
}

// TestWakeSeesOtherConnections: a Wake channel of one Outbox fires after
// a commit made through another Outbox on the same database, as a relay
// in another process would need.
func TestWakeSeesOtherConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := mysqltest.NewDatabase(t)
	writer, watcher := open(t, url, mysql.Config{}), open(t, url, mysql.Config{WakePollInterval: 10 * time.Millisecond})
	wctx, stop := context.WithCancel(ctx)
	wake, err := watcher.Wake(wctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the watcher take its first look
	for {
		select {
		case <-wake:
			continue // drain anything before the commit
		default:
		}
		break
	}
	if err := writer.AppendWithOutbox(ctx, nil, []outbox.Message{{Topic: "t", Key: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after another connection's commit")
	}
	stop()
	for range wake { // closed once wctx ends
	}
}
