package projection

import "context"

// Projection builds read models from published domain events.
//
// The runner calls Setup and Handle inside its own transactions, together
// with the tracking rows that make redelivery harmless: a handler sees
// each (aggregate, version) once, in version order per aggregate (except
// redriven dead letters, see [Event.Redriven]). Handlers must write only
// through tx and address their tables through t, never by literal name.
type Projection interface {
	// Name identifies the projection: tracking key and default consumer
	// group. It must satisfy ValidIdentifier.
	Name() string
	// Topics to consume.
	Topics() []string
	// Tables lists the logical names of the read-model tables.
	Tables() []string
	// Setup creates the tables (idempotently: CREATE TABLE IF NOT EXISTS).
	Setup(ctx context.Context, tx Tx, t Tables) error
	// Handle applies one event.
	Handle(ctx context.Context, tx Tx, t Tables, e Event) error
}

// BatchHandler is implemented by projections that apply many events with
// set-based SQL (a multi-row upsert per table instead of statements per
// event), which is what makes a projection fast. When implemented, the
// runner calls HandleBatch instead of Handle, with the events of a batch
// that passed the duplicate and gap checks, in order. On failure it calls
// it again with one event at a time to find the poison message.
type BatchHandler interface {
	HandleBatch(ctx context.Context, tx Tx, t Tables, events []Event) error
}
