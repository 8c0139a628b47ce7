package postgres_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/eventstore"
	pgstore "github.com/esflow/esflow/pkg/eventstore/postgres"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/outboxtest"
	"github.com/esflow/esflow/pkg/outbox/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open returns a migrated outbox on dsn with its own pool.
func open(t testing.TB, dsn string, cfg postgres.Config, schema eventstore.Schema) *postgres.Outbox {
	t.Helper()
	store, err := pgstore.Open(testCtx(t), dsn, pgstore.Config{Schema: schema})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(store.Close)
	o, err := postgres.New(store, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(o.Close)
	if err := o.Migrate(testCtx(t)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return o
}

func TestConformance(t *testing.T) {
	for _, c := range []struct {
		name   string
		cfg    postgres.Config
		schema eventstore.Schema
	}{
		{"Default", postgres.Config{}, eventstore.Schema{}},
		{"Custom", postgres.Config{OutboxTable: "my_outbox", Channel: "relay_wake"}, eventstore.StoredEventsSchema()},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
				return open(t, pgtest.NewDatabase(t), c.cfg, c.schema)
			})
		})
	}
}

func TestConfigValidation(t *testing.T) {
	store, err := pgstore.Open(context.Background(), "postgres://localhost/none", pgstore.Config{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer store.Close()
	for _, cfg := range []postgres.Config{
		{OutboxTable: "Bad"}, {OutboxTable: "x; DROP TABLE y"}, {Channel: "a-b"}, {OutboxTable: "events"},
	} {
		if _, err := postgres.New(store, cfg); !errors.Is(err, eventstore.ErrInvalidIdentifier) {
			t.Errorf("New(%+v) = %v, want ErrInvalidIdentifier", cfg, err)
		}
	}
	if _, err := postgres.New(nil, postgres.Config{}); err == nil {
		t.Errorf("New(nil) succeeded")
	}
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	o := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	if err := o.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	// A second outbox table in the same database has its own rows.
	o2 := open(t, dsn, postgres.Config{OutboxTable: "second_outbox"}, eventstore.Schema{})
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The outbox's migrations: 0001 table, 0002 chain guard, 0003 lease; the events table's three are the event store's.
	want := map[string]int{o.Table(): 3, o2.Table(): 3, "events": 3}
	for table, w := range want {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM esflow_schema_migrations WHERE table_name = $1`, table).Scan(&n); err != nil || n != w {
			t.Errorf("migrations recorded for %s: %d, %v; want %d", table, n, err, w)
		}
	}
	if err := o2.AppendWithOutbox(ctx, nil, []outbox.Message{{Topic: "t", Key: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	if bl, err := o.Backlog(ctx, outbox.Shard{}); err != nil || bl.Messages != 0 {
		t.Fatalf("first outbox backlog = %+v, %v; want empty", bl, err)
	}
}

// TestLockFailover terminates the session holding a shard's advisory lock:
// its lost channel closes and another holder takes over at once.
func TestLockFailover(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	a := open(t, dsn, postgres.Config{PingInterval: 200 * time.Millisecond}, eventstore.Schema{})
	b := open(t, dsn, postgres.Config{LockRetry: 50 * time.Millisecond}, eventstore.Schema{})
	shard := outbox.Shard{Index: 2, Count: 4}
	lostA, releaseA, err := a.Lock(ctx, shard)
	if err != nil {
		t.Fatalf("Lock a: %v", err)
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
		t.Fatalf("b locked a held shard (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}

	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	key := postgres.LockKey(a.Table(), shard)
	var n int
	err = admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate holder: %d sessions, %v", n, err)
	}
	start := time.Now()
	select {
	case <-lostA:
	case <-time.After(5 * time.Second):
		t.Fatalf("lost not closed after the holder's session was terminated")
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("Lock b: %v", err)
		}
		defer releaseB()
	case <-time.After(5 * time.Second):
		t.Fatalf("b did not take over")
	}
	t.Logf("failover: lost and taken over within %v", time.Since(start))
	releaseA() // after loss: must not hang or fail
}

// TestWakeAcrossInstances checks that a commit through one Outbox (its own
// pool) wakes a Wake channel of another on the same database.
func TestWakeAcrossInstances(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	writer := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	relay := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	other := open(t, dsn, postgres.Config{OutboxTable: "other_outbox"}, eventstore.Schema{})
	wake, err := relay.Wake(ctx)
	if err != nil {
		t.Fatalf("Wake: %v", err)
	}
	otherWake, err := other.Wake(ctx)
	if err != nil {
		t.Fatalf("Wake: %v", err)
	}
	id := uuid.New()
	err = writer.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Topic: "Created", Data: []byte("{}")}},
		[]outbox.Message{{Topic: "t", Key: []byte(id.String()), Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatalf("relay not woken by another instance's commit")
	}
	select {
	case <-otherWake:
		t.Fatalf("a different outbox table's channel was woken")
	case <-time.After(300 * time.Millisecond):
	}
	// A failed append does not need to wake anyone, and must not break
	// the channel.
	err = writer.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: id, Topic: "Created", Data: []byte("{}")}},
		[]outbox.Message{{Topic: "t", Key: []byte(id.String())}})
	if !errors.Is(err, eventstore.ErrConcurrency) {
		t.Fatalf("conflict: %v", err)
	}
	err = writer.AppendWithOutbox(ctx, nil, []outbox.Message{{Topic: "t", Key: []byte("k")}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatalf("relay not woken by the second commit")
	}
}

// TestWakeReconnects terminates the LISTEN session: the channel must stay
// open and work again after the reconnect.
func TestWakeReconnects(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	writer := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	relay := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	wake, err := relay.Wake(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`); err != nil {
		t.Fatal(err)
	}
	// The reconnect itself signals once; drain it.
	select {
	case <-wake:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake-up after reconnect")
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-wake:
	default:
	}
	if err := writer.AppendWithOutbox(ctx, nil, []outbox.Message{{Topic: "t", Key: []byte("k")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-wake:
		if !ok {
			t.Fatal("wake channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("not woken after reconnect")
	}
}

// TestAppendBatchSizes runs the same conflicts through both statement
// forms: VALUES lists (up to 8 records or messages) and unnest (larger
// batches). Each batch holds two streams; a conflict on either stores
// nothing, and records land in batch order.
func TestAppendBatchSizes(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	o := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	batch := func(a, b uuid.UUID, fromA, fromB uint64, n int) ([]eventstore.Record, []outbox.Message) {
		var recs []eventstore.Record
		var msgs []outbox.Message
		for i := range n {
			id, pos := a, fromA+uint64(i/2)
			if i%2 == 1 {
				id, pos = b, fromB+uint64(i/2)
			}
			recs = append(recs, eventstore.Record{StreamID: id, Position: pos, Topic: "T", Data: []byte(`{}`)})
			msgs = append(msgs, outbox.Message{Topic: "t", Key: []byte(id.String()), Value: []byte{byte(i)}})
		}
		return recs, msgs
	}
	for _, n := range []int{1, 2, 8, 9, 10, 40} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			a, b := uuid.New(), uuid.New()
			recs, msgs := batch(a, b, 0, 0, n)
			if err := o.AppendWithOutbox(ctx, recs, msgs); err != nil {
				t.Fatalf("first batch: %v", err)
			}
			done := uint64((n + 1) / 2) // stream a's length
			doneB := uint64(n / 2)
			before, err := o.Backlog(ctx, outbox.Shard{})
			if err != nil {
				t.Fatal(err)
			}
			bads := map[string][2]uint64{
				"taken":  {done - 1, doneB}, // a's last position again
				"beyond": {done + 1, doneB}, // a skips one
			}
			if n > 1 {
				bads["b-gap"] = [2]uint64{done, doneB + 1} // b skips one
			}
			for name, bad := range bads {
				recs, msgs := batch(a, b, bad[0], bad[1], n)
				if err := o.AppendWithOutbox(ctx, recs, msgs); !errors.Is(err, eventstore.ErrConcurrency) {
					t.Errorf("%s: err = %v, want ErrConcurrency", name, err)
				}
			}
			after, err := o.Backlog(ctx, outbox.Shard{})
			if err != nil {
				t.Fatal(err)
			}
			if after.Messages != before.Messages {
				t.Errorf("failed appends wrote %d messages", after.Messages-before.Messages)
			}
			recs, msgs = batch(a, b, done, doneB, n)
			if err := o.AppendWithOutbox(ctx, recs, msgs); err != nil {
				t.Fatalf("continuing batch: %v", err)
			}
			got, err := o.ReadStream(ctx, a, eventstore.StreamQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if want := int(2 * done); len(got) != want {
				t.Fatalf("stream a has %d records, want %d", len(got), want)
			}
			for i, r := range got {
				if r.Position != uint64(i) {
					t.Fatalf("stream a record %d at position %d", i, r.Position)
				}
			}
		})
	}
}

// TestFetchDecodesJSONHeaders: rows whose headers an older writer stored
// as JSON (the form before the binary one) are fetched with their
// headers, so an upgrade publishes the outbox it finds.
func TestFetchDecodesJSONHeaders(t *testing.T) {
	ctx := testCtx(t)
	dsn := pgtest.NewDatabase(t)
	o := open(t, dsn, postgres.Config{}, eventstore.Schema{})
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `INSERT INTO esflow_outbox (topic, key, value, headers, key_hash) VALUES
		('t', 'k1', 'v1', convert_to('[{"key":"event_id","value":"YWJj"},{"key":"x","value":""}]', 'UTF8'), 0),
		('t', 'k2', 'v2', NULL, 0)`); err != nil {
		t.Fatal(err)
	}
	if err := o.AppendWithOutbox(ctx, nil, []outbox.Message{{Topic: "t", Key: []byte("k3"), Value: []byte("v3"),
		Headers: []outbox.Header{{Key: "event_id", Value: []byte("def")}}}}); err != nil {
		t.Fatal(err)
	}
	msgs, err := o.Fetch(ctx, outbox.Shard{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d messages, want 3", len(msgs))
	}
	if h := msgs[0].Headers; len(h) != 2 || h[0].Key != "event_id" || string(h[0].Value) != "abc" || h[1].Key != "x" || len(h[1].Value) != 0 {
		t.Errorf("JSON headers = %q", h)
	}
	if msgs[1].Headers != nil {
		t.Errorf("no headers = %q, want nil", msgs[1].Headers)
	}
	if h := msgs[2].Headers; len(h) != 1 || string(h[0].Value) != "def" {
		t.Errorf("binary headers = %q", h)
	}
}
