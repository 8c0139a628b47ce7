package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
)

// Binaries are the built commands.
type Binaries struct {
	Writer, Relay, Projector string
}

// Pipeline is the running system under test plus the instruments that
// watch it from outside.
type Pipeline struct {
	Env        *Env
	Writers    []*Service
	Clients    []Writer // one per writer process
	Relays     []*Service
	Projectors []*Service
	// SpareProjector is one more projector, not started: a surge roll
	// (as deploy/k8s rolls with maxSurge 1) starts it before it stops an
	// old one, and the two then trade places (Surge).
	SpareProjector *Service
	Checker        *TopicChecker
	Ledger         *Ledger
	Recovery       *Recoveries

	app      *application.Application // the outbox backlog
	readPool *pgxpool.Pool
}

// StartPipeline starts writers, relays and projectors (n of each) as
// processes and the checker, and waits until they answer.
func StartPipeline(ctx context.Context, t testing.TB, env *Env, bins Binaries, n int) *Pipeline {
	t.Helper()
	p := &Pipeline{Env: env, Ledger: NewLedger(), Recovery: newRecoveries()}
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	var err error
	p.app, err = application.New(ctx, application.Config{
		DatabaseURL: env.EventsURL, Registry: reg, Outbox: &outbox.Builder{}, CreateTables: true,
	})
	if err != nil {
		t.Fatalf("application: %v", err)
	}
	t.Cleanup(func() { p.app.Close() })
	if p.readPool, err = pgxpool.New(ctx, env.ReadURL); err != nil {
		t.Fatalf("read-model pool: %v", err)
	}
	t.Cleanup(p.readPool.Close)

	start := func(s *Service, ready string) *Service {
		t.Cleanup(func() {
			s.Close()
			if t.Failed() {
				t.Logf("--- %s output ---\n%s", s.name, proctest.Tail(s.Output(), 3000))
			}
		})
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitHTTP(ctx, ready, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		return s
	}
	addr := func() string {
		a, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	token := randomHex(16)
	set, unset := env.ProcessEnv(env.EventsURL)
	for i := range n {
		a := addr()
		s := NewService(fmt.Sprintf("writer-%d", i), proctest.Command{
			Path: bins.Writer, Args: []string{"-http-addr", a, "-relay=false"},
			Env: append(slices.Clone(set), "WRITER_TOKEN="+token), Unset: unset,
		}, a)
		p.Writers = append(p.Writers, start(s, "/healthz"))
		p.Clients = append(p.Clients, NewHTTPWriter(a, token))
	}
	for i := range n {
		a := addr()
		s := NewService(fmt.Sprintf("relay-%d", i), proctest.Command{
			Path: bins.Relay, Args: []string{"-http-addr", a, "-auto-create-topics", "-log-format", "text"},
			Env: set, Unset: unset,
		}, a)
		p.Relays = append(p.Relays, start(s, "/healthz"))
	}
	set, unset = env.ProcessEnv(env.ReadURL)
	group := "itest-" + randomHex(4) + "-"
	for i := range n {
		a := addr()
		s := NewService(fmt.Sprintf("projector-%d", i), proctest.Command{
			Path: bins.Projector, Args: []string{"-http-addr", a, "-group-prefix", group},
			Env: set, Unset: unset,
		}, a)
		p.Projectors = append(p.Projectors, start(s, "/healthz"))
	}
	{
		a := addr()
		s := NewService(fmt.Sprintf("projector-%d", n), proctest.Command{
			Path: bins.Projector, Args: []string{"-http-addr", a, "-group-prefix", group},
			Env: set, Unset: unset,
		}, a)
		t.Cleanup(func() {
			s.Close()
			if t.Failed() && s.Output() != "" {
				t.Logf("--- %s output ---\n%s", s.name, proctest.Tail(s.Output(), 3000))
			}
		})
		p.SpareProjector = s
	}
	p.Checker = NewTopicChecker(readmodel.WorldTopic, Partitions)
	p.Checker.Start(strings.Split(env.Brokers, ",")[0])
	t.Cleanup(p.Checker.Stop)
	return p
}

// Level says how far an event must have gone for a probe.
type Level int

// Levels of a recovery probe.
const (
	AtKafka     Level = 1 << iota // seen by the checker on the topic
	InReadModel                   // applied in the worlds read model
)

// Probe measures, from now, how long until every event acknowledged so
// far reached level; it runs in the background (see Recoveries.Wait).
func (p *Pipeline) Probe(kind string, level Level) {
	p.ProbeFrom(kind, level, time.Now(), p.Ledger.Snapshot())
}

// ProbeFrom is Probe with an explicit start and target. A probe has no
// deadline of its own: it ends when the target is reached, or, still
// pending, when Recoveries.Stop is called. One poller serves every probe,
// so that measuring does not load the system it measures.
func (p *Pipeline) ProbeFrom(kind string, level Level, start time.Time, want map[uuid.UUID]uint64) {
	r := p.Recovery
	r.note(kind)
	r.wg.Add(1)
	r.mu.Lock()
	r.probes = append(r.probes, &probe{kind: kind, level: level, start: start, want: want})
	first := !r.polling
	r.polling = true
	r.mu.Unlock()
	if first {
		go p.poll()
	}
}

type probe struct {
	kind  string
	level Level
	start time.Time
	want  map[uuid.UUID]uint64
}

// poll checks the pending probes every 100ms against one reading of the
// checker and of the read model.
func (p *Pipeline) poll() {
	r := p.Recovery
	for {
		select {
		case <-r.ctx.Done():
			r.mu.Lock()
			for _, pr := range r.probes {
				r.pending[pr.kind]++
				r.wg.Done()
			}
			r.probes, r.polling = nil, false
			r.mu.Unlock()
			return
		case <-time.After(100 * time.Millisecond):
		}
		r.mu.Lock()
		probes := slices.Clone(r.probes)
		r.mu.Unlock()
		if len(probes) == 0 {
			continue
		}
		kafkaSeen := p.Checker.Prefixes()
		rm, rmErr := ReadVersions(r.ctx, p.readPool)
		total, totalErr := ReadCountTotal(r.ctx, p.readPool)
		now := time.Now()
		var done []*probe
		for _, pr := range probes {
			ok := true
			if pr.level&AtKafka != 0 {
				ok, _ = Covers(kafkaSeen, pr.want)
			}
			if ok && pr.level&InReadModel != 0 {
				ok = rmErr == nil && totalErr == nil
				if ok {
					ok, _ = Covers(rm, pr.want)
				}
				ok = ok && total >= sum(pr.want)
			}
			if ok {
				done = append(done, pr)
			}
		}
		r.mu.Lock()
		for _, pr := range done {
			r.times[pr.kind] = append(r.times[pr.kind], now.Sub(pr.start))
			r.probes = slices.DeleteFunc(r.probes, func(x *probe) bool { return x == pr })
			r.wg.Done()
		}
		r.mu.Unlock()
	}
}

// reached reports whether want is covered at level, and how many
// aggregates fall short.
func (p *Pipeline) reached(ctx context.Context, level Level, want map[uuid.UUID]uint64) (bool, int) {
	if level&AtKafka != 0 {
		if ok, short := Covers(p.Checker.Prefixes(), want); !ok {
			return false, short
		}
	}
	if level&InReadModel != 0 {
		// Both projections that see World events: the worlds table and
		// the event counts (whose total must reach the events wanted).
		have, err := ReadVersions(ctx, p.readPool)
		if err != nil {
			return false, -1
		}
		if ok, short := Covers(have, want); !ok {
			return false, short
		}
		total, err := ReadCountTotal(ctx, p.readPool)
		if err != nil {
			return false, -1
		}
		if total < sum(want) {
			return false, -1
		}
	}
	return true, 0
}

func sum(m map[uuid.UUID]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// WaitCovered waits until want is covered at level.
func (p *Pipeline) WaitCovered(ctx context.Context, level Level, want map[uuid.UUID]uint64, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, short := p.reached(ctx, level, want)
		if ok {
			return time.Since(t0), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("not covered after %s: %d aggregates short", timeout, short)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Backlog returns the number of outbox messages not yet published.
func (p *Pipeline) Backlog(ctx context.Context) (int64, error) {
	b, err := p.app.Outbox().Backlog(ctx, outbox.Shard{})
	return b.Messages, err
}

// Drain waits until the checker and the read model hold everything the
// broker holds (used before the embedded broker, which keeps nothing, is
// stopped: what it acknowledged must not vanish unread).
func (p *Pipeline) Drain(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := strings.Split(p.Env.Brokers, ",")[0]
	for {
		ok, err := p.Checker.CaughtUp(ctx, addr)
		if err == nil && ok {
			if _, err = p.WaitCovered(ctx, InReadModel, p.Checker.Prefixes(), time.Until(deadline)); err == nil {
				// The checker may have moved on meanwhile; once more.
				if ok, err = p.Checker.CaughtUp(ctx, addr); err == nil && ok {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drain: not caught up after %s (last error %v)", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ActiveRelay returns the relay holding the shard lock, or nil.
func (p *Pipeline) ActiveRelay() *Service {
	for _, r := range p.Relays {
		if v, ok, err := proctest.Metric("http://"+r.httpAddr+"/metrics", "esflow_relay_active"); err == nil && ok && v == 1 {
			return r
		}
	}
	return nil
}

// Pause stops s with SIGSTOP for d, then resumes it with SIGCONT.
func Pause(s *Service, d time.Duration) error {
	if err := s.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	time.Sleep(d)
	return s.Signal(syscall.SIGCONT)
}

// Services returns every process of the pipeline (the spare projector
// too: it may be the running one of a pair after a surge roll).
func (p *Pipeline) Services() []*Service {
	return slices.Concat(p.Writers, p.Relays, p.Projectors, []*Service{p.SpareProjector})
}

// Surge rolls projector i the way a Deployment with maxSurge 1 and
// maxUnavailable 0 does: it starts the spare, waits until it is ready
// (joined, caught up; the running replicas hand it its share), then stops
// projector i with SIGTERM, which hands its partitions to the others.
// The stopped one becomes the spare. It returns when the old one has
// exited, with the time the new one took to be ready.
func (p *Pipeline) Surge(ctx context.Context, i int) (ready time.Duration, err error) {
	start := time.Now()
	next, old := p.SpareProjector, p.Projectors[i]
	if err := next.Start(); err != nil {
		return 0, err
	}
	if err := next.WaitHTTP(ctx, "/readyz", 30*time.Second); err != nil {
		return 0, err
	}
	ready = time.Since(start)
	if err := old.Terminate(30 * time.Second); err != nil {
		return ready, fmt.Errorf("%s on SIGTERM: %w", old.Name(), err)
	}
	p.Projectors[i], p.SpareProjector = next, old
	return ready, nil
}

// Recoveries collects how long the pipeline took to recover, per fault
// kind.
type Recoveries struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	probes  []*probe
	polling bool
	times   map[string][]time.Duration
	pending map[string]int
	order   []string
}

func newRecoveries() *Recoveries {
	ctx, cancel := context.WithCancel(context.Background())
	return &Recoveries{ctx: ctx, cancel: cancel, times: map[string][]time.Duration{}, pending: map[string]int{}}
}

func (r *Recoveries) note(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.order, kind) {
		r.order = append(r.order, kind)
	}
}

// Wait waits for the probes in flight, at most max; it reports whether
// they all finished.
func (r *Recoveries) Wait(max time.Duration) bool {
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(max):
		return false
	}
}

// Stop ends the probes still waiting; they are reported as pending.
func (r *Recoveries) Stop() {
	r.cancel()
	r.wg.Wait()
}

// Lines describes the recoveries, one line per fault kind.
func (r *Recoveries) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, k := range r.order {
		ds := slices.Clone(r.times[k])
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		line := fmt.Sprintf("recovery after %s: n=%d", k, len(ds))
		if len(ds) > 0 {
			line += fmt.Sprintf(" median=%s max=%s", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
		}
		if n := r.pending[k]; n > 0 {
			line += fmt.Sprintf(" (%d still pending when the load stopped)", n)
		}
		out = append(out, line)
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
