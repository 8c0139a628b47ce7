package application_test

import (
	"context"
	"errors"
	"testing"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

// The seed examples rerun on MariaDB/MySQL and must print exactly what
// they print on SQLite. The server lives for this test only (this
// package's TestMain belongs to pgtest).
func TestSeedExamplesOnMySQL(t *testing.T) {
	srv := mysqltest.Start(t)
	examples := map[string]func(){
		"quick start":        Example_quickStart,
		"quick start CRUD":   Example_quickStartCRUD,
		"alternative schema": Example_alternativeSchema,
	}
	for name, example := range examples {
		t.Run(name, func(t *testing.T) {
			onSQLite := captureStdout(t, example)
			url := srv.NewDatabase(t)
			if b, err := application.ParseDatabaseURL(url); err != nil || b != application.BackendMySQL {
				t.Fatalf("ParseDatabaseURL(%s) = %q, %v", url, b, err)
			}
			t.Setenv("DATABASE_URL", url)
			onMySQL := captureStdout(t, example)
			if onMySQL != onSQLite || onSQLite == "" {
				t.Fatalf("MySQL printed\n%s\nSQLite printed\n%s", onMySQL, onSQLite)
			}
		})
	}
	t.Run("outbox and notification log", func(t *testing.T) {
		ctx := context.Background()
		app := newApp(t, srv.NewDatabase(t), func(c *application.Config) { c.Outbox = &outbox.Builder{} })
		if app.Backend != application.BackendMySQL || app.Outbox() == nil {
			t.Fatalf("backend %q, outbox %v", app.Backend, app.Outbox())
		}
		w, _ := domain.NewWorld("gods")
		w.MakeItSo("dinosaurs")
		if err := app.Save(ctx, w); err != nil {
			t.Fatal(err)
		}
		stale, err := worlds(app).Get(ctx, w.ID())
		if err != nil {
			t.Fatal(err)
		}
		w.MakeItSo("trucks")
		if err := app.Save(ctx, w); err != nil {
			t.Fatal(err)
		}
		stale.MakeItSo("internet")
		if err := app.Save(ctx, stale); !errors.Is(err, eventstore.ErrConcurrency) {
			t.Fatalf("stale save: %v, want ErrConcurrency", err)
		}
		msgs, err := app.Outbox().Fetch(ctx, outbox.Shard{}, 10)
		if err != nil || len(msgs) != 3 {
			t.Fatalf("outbox holds %d messages, %v; want 3", len(msgs), err)
		}
		items, err := application.NewReader(app.Log, 0, 10).Read(ctx)
		if err != nil || len(items) != 3 {
			t.Fatalf("notification log: %d items, %v; want 3", len(items), err)
		}
	})
}
