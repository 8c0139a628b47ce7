package application_test

import (
	"context"
	"errors"
	"testing"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
)

func TestSaveWithIntegrationMessages(t *testing.T) {
	ctx := context.Background()
	for name, url := range backends(t) {
		t.Run(name, func(t *testing.T) {
			app := newApp(t, url, func(c *application.Config) { c.Outbox = &outbox.Builder{} })
			w, _ := domain.NewWorld("gods")
			note := outbox.Message{Topic: "billing.invoices", Key: []byte("inv-1"), Value: []byte(`{"total":3}`)}
			if err := app.SaveWithMessages(ctx, []outbox.Message{note}, w); err != nil {
				t.Fatal(err)
			}
			msgs, err := app.Outbox().Fetch(ctx, outbox.Shard{}, 10)
			if err != nil || len(msgs) != 2 || msgs[0].Topic != "esflow.World" || msgs[1].Topic != "billing.invoices" {
				t.Fatalf("outbox holds %+v, %v", msgs, err)
			}
			// A stale save writes neither its events nor its messages.
			stale, _ := worlds(app).Get(ctx, w.ID())
			w.MakeItSo("first")
			if err := app.Save(ctx, w); err != nil {
				t.Fatal(err)
			}
			stale.MakeItSo("second")
			if err := app.SaveWithMessages(ctx, []outbox.Message{note}, stale); !errors.Is(err, eventstore.ErrConcurrency) {
				t.Fatalf("stale save: %v", err)
			}
			if bl, _ := app.Outbox().Backlog(ctx, outbox.Shard{}); bl.Messages != 3 {
				t.Fatalf("backlog %d, want 3 (2 + the first world's event)", bl.Messages)
			}
			if err := app.SaveWithMessages(ctx, []outbox.Message{{Key: []byte("k")}}); !errors.Is(err, outbox.ErrUnroutable) {
				t.Fatalf("message without topic: %v", err)
			}
		})
	}
	plain := newApp(t, "memory:")
	if err := plain.SaveWithMessages(ctx, []outbox.Message{{Topic: "t"}}); !errors.Is(err, eventstore.ErrNoOutbox) {
		t.Fatalf("messages without an outbox: %v", err)
	}
	if plain.Outbox() != nil {
		t.Fatal("outbox without Config.Outbox")
	}
}
