package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// ErrConflict is a writer's answer that the aggregate moved on (HTTP 409).
var ErrConflict = errors.New("concurrency conflict")

// Writer is how the load reaches the store (HTTPWriter: a cmd/writer
// process). Versions are aggregate versions after the command (the
// number of events).
type Writer interface {
	Create(ctx context.Context, id uuid.UUID, ruler string) (uint64, error)
	MakeItSo(ctx context.Context, id uuid.UUID, what string, expected *uint64) (uint64, error)
	SetRuler(ctx context.Context, id uuid.UUID, ruler string) (uint64, error)
	Name() string
}

// HTTPWriter talks to one cmd/writer process.
type HTTPWriter struct {
	base, token string
	client      *http.Client
}

// NewHTTPWriter returns a client of the writer at addr (host:port) that
// presents token as its bearer token.
func NewHTTPWriter(addr, token string) *HTTPWriter {
	return &HTTPWriter{base: "http://" + addr, token: token, client: &http.Client{Timeout: 10 * time.Second}}
}

// Name implements Writer.
func (w *HTTPWriter) Name() string { return w.base }

func (w *HTTPWriter) do(ctx context.Context, method, path string, body any, want int) (uint64, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+w.token)
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case want:
		var out struct {
			Version uint64 `json:"version"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return 0, fmt.Errorf("%s %s: decode %q: %w", method, path, data, err)
		}
		return out.Version, nil
	case http.StatusConflict:
		return 0, fmt.Errorf("%s %s: %w: %s", method, path, ErrConflict, bytes.TrimSpace(data))
	default:
		return 0, fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
}

// Create implements Writer: POST /v1/worlds.
func (w *HTTPWriter) Create(ctx context.Context, id uuid.UUID, ruler string) (uint64, error) {
	return w.do(ctx, "POST", "/v1/worlds", map[string]any{"id": id.String(), "ruler": ruler}, http.StatusCreated)
}

// MakeItSo implements Writer: POST /v1/worlds/{id}/make-it-so.
func (w *HTTPWriter) MakeItSo(ctx context.Context, id uuid.UUID, what string, expected *uint64) (uint64, error) {
	body := map[string]any{"what": what}
	if expected != nil {
		body["expected_version"] = *expected
	}
	return w.do(ctx, "POST", "/v1/worlds/"+id.String()+"/make-it-so", body, http.StatusOK)
}

// SetRuler implements Writer: PUT /v1/worlds/{id}/ruler.
func (w *HTTPWriter) SetRuler(ctx context.Context, id uuid.UUID, ruler string) (uint64, error) {
	return w.do(ctx, "PUT", "/v1/worlds/"+id.String()+"/ruler", map[string]any{"ruler": ruler}, http.StatusOK)
}

// Ledger holds what the writers were told was committed: per aggregate,
// the highest acknowledged version (number of events).
type Ledger struct {
	// Ops counts acknowledged commands.
	Ops atomic.Int64
	// Errs counts failed commands (deliberate conflicts aside).
	Errs atomic.Int64

	mu    sync.Mutex
	acked map[uuid.UUID]uint64
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{acked: map[uuid.UUID]uint64{}} }

// Ack records that version (the aggregate's event count) of id was
// acknowledged.
func (l *Ledger) Ack(id uuid.UUID, version uint64) {
	l.Ops.Add(1)
	l.mu.Lock()
	l.acked[id] = max(l.acked[id], version)
	l.mu.Unlock()
}

// Snapshot copies the acknowledged versions.
func (l *Ledger) Snapshot() map[uuid.UUID]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[uuid.UUID]uint64, len(l.acked))
	for k, v := range l.acked {
		m[k] = v
	}
	return m
}

// Load drives writers at about rate commands per second over workers
// goroutines until stop; every goroutine owns its aggregates, so the
// load itself makes no conflicts. A failed command (the database is
// restarting, a writer was killed) is retried later on a fresh aggregate
// state: whether it committed is settled by the event store, not here.
type Load struct {
	writers []Writer
	ledger  *Ledger
	stop    chan struct{}
	wg      sync.WaitGroup
	lastErr atomic.Value // string
}

const maxEventsPerWorld = 40

// StartLoad starts workers goroutines sending about rate commands per
// second in all to writers (round robin), recording acknowledgements in l.
func StartLoad(writers []Writer, l *Ledger, workers int, rate float64) *Load {
	ld := &Load{writers: writers, ledger: l, stop: make(chan struct{})}
	interval := time.Duration(float64(workers) / rate * float64(time.Second))
	for i := range workers {
		ld.wg.Add(1)
		go ld.worker(i, interval)
	}
	return ld
}

func (ld *Load) worker(i int, interval time.Duration) {
	defer ld.wg.Done()
	ctx := context.Background()
	type owned struct {
		id      uuid.UUID
		version uint64 // last acknowledged
	}
	var worlds []*owned
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ld.stop:
			return
		case <-tick.C:
		}
		w := ld.writers[(i+n)%len(ld.writers)]
		var err error
		if len(worlds) < 4 || rand.IntN(25) == 0 {
			o := &owned{id: uuid.New()}
			if o.version, err = w.Create(ctx, o.id, "ruler-0"); err == nil {
				worlds = append(worlds, o)
				ld.ledger.Ack(o.id, o.version)
			}
		} else {
			k := rand.IntN(len(worlds))
			o := worlds[k]
			var v uint64
			if rand.IntN(8) == 0 {
				v, err = w.SetRuler(ctx, o.id, fmt.Sprintf("ruler-%d-%d", i, n))
			} else {
				v, err = w.MakeItSo(ctx, o.id, fmt.Sprintf("w%d-%d", i, n), nil)
			}
			if err == nil {
				o.version = v
				ld.ledger.Ack(o.id, v)
				if v >= maxEventsPerWorld { // keep read-model rows small
					worlds = append(worlds[:k], worlds[k+1:]...)
				}
			}
		}
		if err != nil {
			ld.ledger.Errs.Add(1)
			ld.lastErr.Store(err.Error())
			select {
			case <-ld.stop:
				return
			case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond):
			}
		}
	}
}

// Stop stops the workers and waits until every command in flight returned.
func (ld *Load) Stop() {
	select {
	case <-ld.stop:
	default:
		close(ld.stop)
	}
	ld.wg.Wait()
}

// Contention is the result of RunContention.
type Contention struct {
	// ID is the contended aggregate.
	ID uuid.UUID
	// Rounds and Clients: in every round, Clients commands were sent at
	// once with the same expected version.
	Rounds, Clients int
	// Wins counts successful commands (want Rounds), Conflicts the 409s
	// (want Rounds*(Clients-1)).
	Wins, Conflicts int
	// Problems lists rounds without exactly one winner and any other
	// error.
	Problems []string
}

// RunContention is the concurrency check: for each round, clients send
// the same command with the same expected version at once, spread over
// the writers; exactly one may win and every other must get a conflict.
func RunContention(ctx context.Context, writers []Writer, rounds, clients int) Contention {
	res := Contention{Rounds: rounds, Clients: clients, ID: uuid.New()}
	v, err := writers[0].Create(ctx, res.ID, "contended")
	if err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("create: %v", err))
		return res
	}
	for r := range rounds {
		expected := v
		type answer struct {
			v   uint64
			err error
		}
		answers := make([]answer, clients)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				w := writers[c%len(writers)]
				nv, err := w.MakeItSo(ctx, res.ID, fmt.Sprintf("round %d client %d", r, c), &expected)
				answers[c] = answer{nv, err}
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for c, a := range answers {
			switch {
			case a.err == nil:
				wins++
				if a.v != expected+1 {
					res.Problems = append(res.Problems, fmt.Sprintf("round %d client %d: won with version %d, want %d", r, c, a.v, expected+1))
				}
				v = a.v
			case errors.Is(a.err, ErrConflict):
				res.Conflicts++
			default:
				res.Problems = append(res.Problems, fmt.Sprintf("round %d client %d: %v", r, c, a.err))
			}
		}
		res.Wins += wins
		if wins != 1 {
			res.Problems = append(res.Problems, fmt.Sprintf("round %d: %d winners at expected version %d, want exactly 1", r, wins, expected))
			if wins == 0 {
				return res
			}
		}
	}
	return res
}
