package application_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
)

func TestMain(m *testing.M) {
	// The examples read DATABASE_URL; a developer's server meant for
	// pgtest must not leak into them.
	if url := os.Getenv("DATABASE_URL"); url != "" {
		os.Setenv(pgtest.ServerURLEnv, url)
		os.Unsetenv("DATABASE_URL")
	}
	os.Exit(pgtest.Main(m))
}

// captureStdout runs fn and returns what it printed.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	defer func() { os.Stdout = saved }()
	fn()
	w.Close()
	return string(<-done)
}

// The seed examples run on SQLite as their pages do; here the same code
// runs against PostgreSQL and must print exactly the same.
func TestSeedExamplesOnPostgres(t *testing.T) {
	examples := map[string]func(){
		"quick start":        Example_quickStart,
		"quick start CRUD":   Example_quickStartCRUD,
		"alternative schema": Example_alternativeSchema,
	}
	for name, example := range examples {
		t.Run(name, func(t *testing.T) {
			onSQLite := captureStdout(t, example)
			t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
			onPostgres := captureStdout(t, example)
			if onPostgres != onSQLite || onSQLite == "" {
				t.Fatalf("PostgreSQL printed\n%s\nSQLite printed\n%s", onPostgres, onSQLite)
			}
		})
	}
}

func TestAlternativeSchemaTables(t *testing.T) {
	path := t.TempDir() + "/alt.db"
	t.Setenv("DATABASE_URL", "sqlite://"+path)
	captureStdout(t, Example_alternativeSchema)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT aggregate_id, aggregate_version, event_type, state FROM stored_events ORDER BY aggregate_version`)
	if err != nil {
		t.Fatalf("stored_events not queryable with the seed's columns: %v", err)
	}
	defer rows.Close()
	var types []string
	for rows.Next() {
		var id, typ string
		var version int
		var state []byte
		if err := rows.Scan(&id, &version, &typ, &state); err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
	}
	if strings.Join(types, ",") != "Created,AttributeChanged,Discarded" {
		t.Fatalf("stored event types = %v", types)
	}
}

// backends gives each test a fresh application per backend.
func backends(t *testing.T) map[string]string {
	return map[string]string{
		"memory":   "memory:",
		"sqlite":   "sqlite::memory:",
		"postgres": pgtest.NewDatabase(t),
	}
}

func newApp(t *testing.T, url string, mutate ...func(*application.Config)) *application.Application {
	t.Helper()
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	cfg := application.Config{DatabaseURL: url, Registry: reg, CreateTables: true}
	for _, m := range mutate {
		m(&cfg)
	}
	app, err := application.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

func worlds(app *application.Application, opts ...application.RepositoryOption) *application.Repository[*domain.World] {
	return application.NewRepository(app.Store, func() *domain.World { return new(domain.World) }, opts...)
}

func TestRepository(t *testing.T) {
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			app := newApp(t, url)
			repo := worlds(app)

			if _, err := repo.Get(ctx, [16]byte{1}); !errors.Is(err, application.ErrNotFound) {
				t.Errorf("missing: %v", err)
			}
			w, _ := domain.NewWorld("gods")
			for _, s := range []string{"a", "b", "c"} {
				w.MakeItSo(s)
			}
			x, _ := domain.NewExample("foo")
			if err := app.Save(ctx, w, x); err != nil {
				t.Fatal(err)
			}
			if len(w.PendingEvents()) != 0 {
				t.Errorf("pending events kept after save")
			}

			for v, want := range map[uint64]string{1: "", 2: "a", 4: "a,b,c"} {
				got, err := repo.GetAt(ctx, w.ID(), v)
				if err != nil || strings.Join(got.History, ",") != want || got.Version() != v {
					t.Errorf("GetAt(%d) = %v v%d, %v", v, got.History, got.Version(), err)
				}
			}
			for _, v := range []uint64{0, 5} {
				if _, err := repo.GetAt(ctx, w.ID(), v); !errors.Is(err, application.ErrNotFound) {
					t.Errorf("GetAt(%d): %v, want ErrNotFound", v, err)
				}
			}

			// Two aggregates in one save: one is stale, neither is stored.
			stale, _ := repo.Get(ctx, w.ID())
			w.MakeItSo("d")
			if err := app.Save(ctx, w); err != nil {
				t.Fatal(err)
			}
			x.SetFoo("bar")
			stale.MakeItSo("conflict")
			if err := app.Save(ctx, x, stale); !errors.Is(err, eventstore.ErrConcurrency) {
				t.Fatalf("stale save: %v", err)
			}
			if len(x.PendingEvents()) != 1 {
				t.Errorf("failed save dropped pending events")
			}
			xs := application.NewRepository(app.Store, func() *domain.Example { return new(domain.Example) })
			if got, _ := xs.Get(ctx, x.ID()); got.Foo != "foo" {
				t.Errorf("half of a failed save was stored: foo=%q", got.Foo)
			}
		})
	}
}

func TestAutomaticSnapshots(t *testing.T) {
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			app := newApp(t, url, func(c *application.Config) { c.SnapshotEvery = map[string]uint64{"World": 5} })
			w, _ := domain.NewWorld("gods")
			for i := range 11 {
				w.MakeItSo(string(rune('a' + i)))
				if err := app.Save(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
			snaps := app.Recorder().(eventstore.SnapshotRecorder)
			for _, tc := range []struct{ upTo, want uint64 }{{100, 10}, {9, 5}, {4, 0}} {
				snap, ok, err := snaps.LatestSnapshot(ctx, w.ID(), &tc.upTo)
				if err != nil || ok != (tc.want > 0) || (ok && snap.Position != tc.want) {
					t.Errorf("snapshot <= %d: %d %v %v, want %d", tc.upTo, snap.Position, ok, err, tc.want)
				}
			}
			repo := worlds(app)
			got, err := repo.Get(ctx, w.ID())
			if err != nil || got.Version() != 12 || len(got.History) != 11 || got.Head() != w.Head() {
				t.Fatalf("Get with snapshot: v%d %v head ok %v, %v", got.Version(), got.History, got.Head() == w.Head(), err)
			}
			at7, err := repo.GetAt(ctx, w.ID(), 7)
			if err != nil || strings.Join(at7.History, "") != "abcdef" {
				t.Fatalf("GetAt(7) with snapshot 5: %v, %v", at7.History, err)
			}
		})
	}
}

func TestTamperedStoreDetectedOnLoad(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/t.db"
	app := newApp(t, "sqlite://"+path)
	w, _ := domain.NewWorld("gods")
	w.MakeItSo("dinosaurs")
	if err := app.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE events SET data = replace(data, 'dinosaurs', 'mammals') WHERE position = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := worlds(app).Get(ctx, w.ID()); !errors.Is(err, eventstore.ErrIntegrity) {
		t.Fatalf("tampered record: %v, want ErrIntegrity", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantURL string
		backend application.Backend
		err     bool
	}{
		{"default", nil, "", application.BackendSQLite, false},
		{"database url", map[string]string{"DATABASE_URL": "postgres://u@h/db"}, "postgres://u@h/db", application.BackendPostgres, false},
		{"alias", map[string]string{"DB_URI": "sqlite:///tmp/x.db"}, "sqlite:///tmp/x.db", application.BackendSQLite, false},
		{"database url wins", map[string]string{"DB_URI": "memory:", "DATABASE_URL": "sqlite::memory:"}, "sqlite::memory:", application.BackendSQLite, false},
		{"memory", map[string]string{"DATABASE_URL": "memory:"}, "memory:", application.BackendMemory, false},
		{"unknown scheme", map[string]string{"DATABASE_URL": "oracle://x"}, "", "", true},
		{"bad compress", map[string]string{"ESFLOW_COMPRESS": "maybe"}, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"DATABASE_URL", "DB_URI", "CIPHER_KEY", "ESFLOW_COMPRESS"} {
				t.Setenv(k, tc.env[k])
			}
			cfg, err := application.ConfigFromEnv()
			if tc.err {
				if !errors.Is(err, application.ErrConfig) {
					t.Fatalf("err = %v, want ErrConfig", err)
				}
				return
			}
			if err != nil || cfg.DatabaseURL != tc.wantURL || !cfg.CreateTables {
				t.Fatalf("cfg = %+v, %v", cfg, err)
			}
			if b, _ := application.ParseDatabaseURL(cfg.DatabaseURL); b != tc.backend {
				t.Errorf("backend = %q, want %q", b, tc.backend)
			}
		})
	}
}

func TestBadCipherKeyRejected(t *testing.T) {
	_, err := application.New(context.Background(), application.Config{DatabaseURL: "memory:", CipherKey: "dG9vIHNob3J0"})
	if !errors.Is(err, eventstore.ErrCipher) || !strings.Contains(err.Error(), "CIPHER_KEY") {
		t.Fatalf("err = %v", err)
	}
}

func TestWrongCipherKeyOnReopen(t *testing.T) {
	ctx := context.Background()
	url := "sqlite://" + t.TempDir() + "/k.db"
	k1, _ := eventstore.GenerateCipherKey()
	k2, _ := eventstore.GenerateCipherKey()
	app := newApp(t, url, func(c *application.Config) { c.CipherKey = k1 })
	w, _ := domain.NewWorld("gods")
	if err := app.Save(ctx, w); err != nil {
		t.Fatal(err)
	}
	app.Close()
	other := newApp(t, url, func(c *application.Config) { c.CipherKey = k2 })
	if _, err := worlds(other).Get(ctx, w.ID()); !errors.Is(err, eventstore.ErrCipher) {
		t.Fatalf("wrong key: %v", err)
	}
	again := newApp(t, url, func(c *application.Config) { c.CipherKey = k1 })
	if got, err := worlds(again).Get(ctx, w.ID()); err != nil || got.Ruler != "gods" {
		t.Fatalf("right key after reopen: %v", err)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	url := "sqlite://" + t.TempDir() + "/r.db"
	app := newApp(t, url)
	w, _ := domain.NewWorld("gods")
	app.Save(ctx, w)
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	again := newApp(t, url)
	if ok, err := worlds(again).Contains(ctx, w.ID()); !ok || err != nil {
		t.Fatalf("after reopen: %v %v", ok, err)
	}
	if !bytes.Contains([]byte(url), []byte("r.db")) {
		t.Fatal("unreachable")
	}
}
