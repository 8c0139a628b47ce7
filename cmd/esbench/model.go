package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

// payloadSize is the JSON size of every benchmark event's payload (the
// issue's "~250-byte JSON events").
const payloadSize = 250

// Recorded is the benchmark's one event type: a ledger line.
type Recorded struct {
	Seq      int    `json:"seq"`
	Account  string `json:"account"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	Memo     string `json:"memo"`
}

// Account is the benchmark aggregate: it counts its lines and sums them,
// so replaying it costs the decoding, not the bookkeeping of a big state.
type Account struct {
	aggregate.Root
	Lines   int   `json:"lines"`
	Balance int64 `json:"balance"`
}

// Apply implements aggregate.Aggregate.
func (a *Account) Apply(e aggregate.Event) {
	if p, ok := e.Payload.(*Recorded); ok {
		a.Lines++
		a.Balance += p.Amount
	}
}

// memo pads Recorded so that its JSON is payloadSize bytes.
var memo = func() string {
	b, _ := json.Marshal(Recorded{Seq: 1000, Account: "ACC-00000000", Amount: 12345, Currency: "EUR"})
	return strings.Repeat("x", payloadSize-len(b))
}()

func line(seq int) *Recorded {
	return &Recorded{Seq: 1000 + seq%9000, Account: "ACC-00000000", Amount: 12345, Currency: "EUR", Memo: memo}
}

// newAccount creates an account with its first line.
func newAccount() (*Account, error) {
	a := new(Account)
	if err := aggregate.Create(a, line(0)); err != nil {
		return nil, err
	}
	return a, nil
}

// record triggers n more lines.
func (a *Account) record(n int) error {
	for i := range n {
		if err := aggregate.Trigger(a, line(int(a.Version())+i)); err != nil {
			return err
		}
	}
	return nil
}

func registry() *aggregate.Registry {
	reg := aggregate.NewRegistry()
	aggregate.Register[Recorded](reg)
	aggregate.Register[Account](reg)
	return reg
}

// router sends the benchmark's events to topic.
func router(topic string) outbox.Router {
	return outbox.Router{AggregateTopics: map[string]string{aggregate.TypeName(new(Account)): topic}}
}

// openApp opens an application with the outbox on (routing to topic) or
// off (topic "").
func openApp(ctx context.Context, dsn, topic string, log *slog.Logger) (*application.Application, error) {
	return openAppMode(ctx, dsn, topic, log, application.OutboxTable)
}

// openAppMode is openApp with the outbox in the given mode.
func openAppMode(ctx context.Context, dsn, topic string, log *slog.Logger, mode application.OutboxMode) (*application.Application, error) {
	cfg := application.Config{DatabaseURL: dsn, Registry: registry(), CreateTables: true, Logger: log, OutboxMode: mode}
	if topic != "" {
		cfg.Outbox = &outbox.Builder{Router: router(topic)}
	}
	return application.New(ctx, cfg)
}

// ledger is the read model of workloads 3 and 4: per account, the lines
// applied and the balance. It implements projection.BatchHandler (one
// multi-row upsert per batch), as a projection meant to be fast does.
type ledger struct {
	name, topic string
	// seen, when set, is told the accounts of each handled batch (before
	// its transaction commits).
	seen func(ids []uuid.UUID)
}

func (l *ledger) Name() string     { return l.name }
func (l *ledger) Topics() []string { return []string{l.topic} }
func (l *ledger) Tables() []string { return []string{"ledger"} }

func (l *ledger) Setup(ctx context.Context, tx projection.Tx, t projection.Tables) error {
	_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.Name("ledger")+` (
		id uuid PRIMARY KEY,
		lines bigint NOT NULL,
		balance bigint NOT NULL,
		version bigint NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now())`)
	return err
}

func (l *ledger) Handle(ctx context.Context, tx projection.Tx, t projection.Tables, e projection.Event) error {
	return l.HandleBatch(ctx, tx, t, []projection.Event{e})
}

type ledgerRow struct {
	lines, balance int64
	version        uint64
}

func (l *ledger) HandleBatch(ctx context.Context, tx projection.Tx, t projection.Tables, events []projection.Event) error {
	rows := make(map[uuid.UUID]*ledgerRow, len(events))
	order := make([]uuid.UUID, 0, len(events))
	for _, e := range events {
		var p Recorded
		if err := e.Decode(&p); err != nil {
			return fmt.Errorf("event %s: %w", e.EventID, err)
		}
		r, ok := rows[e.AggregateID]
		if !ok {
			r = new(ledgerRow)
			rows[e.AggregateID] = r
			order = append(order, e.AggregateID)
		}
		r.lines++
		r.balance += p.Amount
		r.version = max(r.version, e.AggregateVersion)
	}
	args := make([]any, 0, 4*len(order))
	for _, id := range order {
		r := rows[id]
		args = append(args, pgtype.UUID{Bytes: id, Valid: true}, r.lines, r.balance, int64(r.version))
	}
	tn := t.Name("ledger")
	_, err := tx.Exec(ctx, `INSERT INTO `+tn+` (id, lines, balance, version) VALUES `+projection.Values(len(order), 4, 1)+`
		ON CONFLICT (id) DO UPDATE SET lines = `+tn+`.lines + excluded.lines,
		balance = `+tn+`.balance + excluded.balance,
		version = GREATEST(`+tn+`.version, excluded.version), updated_at = now()`, args...)
	if err != nil {
		return err
	}
	if l.seen != nil {
		l.seen(order)
	}
	return nil
}

// visibility stamps the time at which each account first became visible
// in the read model: the ledger reports the accounts of a batch while its
// transaction is open, and the runner's Applied hook, called after the
// commit, stamps them.
type visibility struct {
	projection.NoHooks
	mu      sync.Mutex
	pending []uuid.UUID
	visible map[uuid.UUID]time.Time
}

func newVisibility() *visibility { return &visibility{visible: map[uuid.UUID]time.Time{}} }

func (v *visibility) seen(ids []uuid.UUID) {
	v.mu.Lock()
	v.pending = append(v.pending, ids...)
	v.mu.Unlock()
}

// Applied implements projection.Hooks.
func (v *visibility) Applied(int, time.Duration) {
	now := time.Now()
	v.mu.Lock()
	for _, id := range v.pending {
		if _, ok := v.visible[id]; !ok {
			v.visible[id] = now
		}
	}
	v.pending = v.pending[:0]
	v.mu.Unlock()
}

func (v *visibility) snapshot() map[uuid.UUID]time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.visible)
}

func (v *visibility) has(id uuid.UUID) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.visible[id]
	return ok
}
