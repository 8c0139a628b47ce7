package main

// Process-level tests: cmd/relay and cmd/projector run as real
// subprocesses; the event store and the read model are two fresh
// PostgreSQL databases; the Kafka broker is embedded in the test process
// (loopback). Writers and the checks run in the test process, and the
// expected read model is always computed from the event store itself.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

const (
	relayPkg     = "github.com/esflow/esflow/cmd/relay"
	projectorPkg = "github.com/esflow/esflow/cmd/projector"
	partitions   = 8
	groupPrefix  = "test-"
	// killCyclesEnv raises the number of kill -9 cycles of
	// TestProcessKill9MidBatch (for soak runs).
	killCyclesEnv = "ESFLOW_PROJECTOR_KILL_CYCLES"
)

// bins builds cmd/relay and cmd/projector once per test binary.
var bins *proctest.Builds

func TestMain(m *testing.M) {
	bins = proctest.NewBuilds()
	code := pgtest.Main(m)
	bins.Close()
	os.Exit(code)
}

// stack is one test's pipeline: an event store with the outbox, a broker,
// a read-model database, and the relay and projector processes started
// on them.
type stack struct {
	t       *testing.T
	app     *application.Application
	esURL   string
	rmURL   string
	broker  *broker.Broker
	relayNo int
}

func newStack(t *testing.T) *stack {
	t.Helper()
	bins.Paths(t, relayPkg, projectorPkg) // both at once, before anything runs
	s := &stack{t: t, esURL: pgtest.NewDatabase(t), rmURL: pgtest.NewDatabase(t)}
	b, err := broker.Start(context.Background(), broker.Config{
		Partitions: partitions,
		Topics:     []string{readmodel.WorldTopic, readmodel.ExampleTopic, "worlds.dlq", "examples.dlq", "event_counts.dlq"},
	})
	if err != nil {
		t.Fatalf("starting broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s.broker = b

	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(context.Background(), application.Config{
		DatabaseURL: s.esURL, Outbox: &outbox.Builder{}, Registry: reg, CreateTables: true,
	})
	if err != nil {
		t.Fatalf("event store: %v", err)
	}
	t.Cleanup(func() { _ = app.Close() })
	s.app = app
	return s
}

// unsetEnv are inherited variables a child process must not see: each
// gets its database and brokers from the test.
var unsetEnv = []string{"DATABASE_URL", application.EnvDBURI, "KAFKA_*", "CIPHER_KEY"}

// startRelay starts cmd/relay on the event store.
func (s *stack) startRelay() *proctest.Process {
	s.t.Helper()
	addr := proctest.FreeAddr(s.t)
	p := proctest.Start(s.t, proctest.Command{
		Name:  "relay-" + strconv.Itoa(s.relayNo),
		Path:  bins.Path(s.t, relayPkg),
		Args:  []string{"-http-addr", addr, "-log-format", "text"},
		Env:   []string{"DATABASE_URL=" + s.esURL, "KAFKA_BROKERS=" + s.broker.Addr()},
		Unset: unsetEnv,
	})
	s.relayNo++
	p.WaitHTTP(s.t, "http://"+addr+"/healthz", 30*time.Second)
	return p
}

// projProc is one cmd/projector process and its HTTP base URL.
type projProc struct {
	*proctest.Process
	base string
}

// startProjector starts cmd/projector on the read-model database and
// waits until it serves HTTP.
func (s *stack) startProjector(name string, args ...string) *projProc {
	s.t.Helper()
	addr := proctest.FreeAddr(s.t)
	p := proctest.Start(s.t, proctest.Command{
		Name:  name,
		Path:  bins.Path(s.t, projectorPkg),
		Args:  append([]string{"-group-prefix", groupPrefix, "-http-addr", addr, "-member-name", name}, args...),
		Env:   []string{"DATABASE_URL=" + s.rmURL, "KAFKA_BROKERS=" + s.broker.Addr()},
		Unset: unsetEnv,
	})
	p.WaitHTTP(s.t, "http://"+addr+"/healthz", 30*time.Second)
	return &projProc{Process: p, base: "http://" + addr}
}

// startWriters saves World and Example aggregates from n goroutines
// (new ones, attribute changes, and mostly eventsPerSave MakeItSo events
// per saved world) with a pause of about pause between saves, until
// stop; stop returns once every writer has finished its
// current save.
func (s *stack) startWriters(n, eventsPerSave int, pause time.Duration) (stop func()) {
	t := s.t
	t.Helper()
	quit := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.write(i, eventsPerSave, pause, quit); err != nil {
				errs <- fmt.Errorf("writer %d: %w", i, err)
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (s *stack) write(writer, eventsPerSave int, pause time.Duration, quit <-chan struct{}) error {
	ctx := context.Background()
	var worlds []*domain.World
	var examples []*domain.Example
	for j := 0; ; j++ {
		select {
		case <-quit:
			return nil
		default:
		}
		var agg aggregate.Aggregate
		switch r := rand.IntN(20); {
		case len(worlds) < 4 || r == 0:
			w, err := domain.NewWorld(fmt.Sprintf("ruler %d.%d", writer, j))
			if err != nil {
				return err
			}
			worlds, agg = append(worlds, w), w
		case len(examples) < 2 || r == 1:
			x, err := domain.NewExample(fmt.Sprintf("foo %d.%d", writer, j))
			if err != nil {
				return err
			}
			examples, agg = append(examples, x), x
		case r < 4:
			x := examples[rand.IntN(len(examples))]
			if err := x.SetFoo(fmt.Sprintf("foo %d.%d", writer, j)); err != nil {
				return err
			}
			agg = x
		default:
			w := worlds[rand.IntN(len(worlds))]
			for k := range eventsPerSave {
				if err := w.MakeItSo(fmt.Sprintf("thing %d.%d.%d", writer, j, k)); err != nil {
					return err
				}
			}
			if r == 4 {
				if err := w.SetRuler(fmt.Sprintf("ruler %d.%d", writer, j)); err != nil {
					return err
				}
			}
			agg = w
		}
		if err := s.app.Save(ctx, agg); err != nil {
			return fmt.Errorf("save: %w", err)
		}
		time.Sleep(pause/2 + rand.N(pause))
	}
}

// model is the example read model: what cmd/projector serves.
type model struct {
	Counts   []readmodel.Count
	Worlds   map[uuid.UUID]readmodel.World
	Examples map[uuid.UUID]readmodel.Example
	Events   int // events in the store (for logs)
}

// expected computes the read model from the event store: the counts from
// the notification log, each aggregate's state by replaying it through a
// repository.
func (s *stack) expected() model {
	t := s.t
	t.Helper()
	ctx := context.Background()
	m := model{Worlds: map[uuid.UUID]readmodel.World{}, Examples: map[uuid.UUID]readmodel.Example{}}
	type key struct{ agg, event string }
	counts := map[key]int64{}
	ids := map[uuid.UUID]string{}
	for next := uint64(1); ; {
		ns, err := s.app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: next, Limit: 1000})
		if err != nil {
			t.Fatalf("reading the notification log: %v", err)
		}
		if len(ns) == 0 {
			break
		}
		recs := make([]eventstore.Record, len(ns))
		for i, n := range ns {
			recs[i] = n.Record
		}
		events, err := s.app.Store.Decode(recs)
		if err != nil {
			t.Fatalf("decoding notifications: %v", err)
		}
		for _, e := range events {
			counts[key{e.AggregateType, e.Type}]++
			ids[e.AggregateID] = e.AggregateType
		}
		m.Events += len(ns)
		next = ns[len(ns)-1].ID + 1
	}
	for k, n := range counts {
		m.Counts = append(m.Counts, readmodel.Count{AggregateType: k.agg, EventType: k.event, Count: n})
	}
	sortCounts(m.Counts)

	worlds := application.NewRepository(s.app.Store, func() *domain.World { return new(domain.World) })
	examples := application.NewRepository(s.app.Store, func() *domain.Example { return new(domain.Example) })
	for id, typ := range ids {
		switch typ {
		case "World":
			w, err := worlds.Get(ctx, id)
			if err != nil {
				t.Fatalf("replaying world %s: %v", id, err)
			}
			history := w.History
			if history == nil {
				history = []string{}
			}
			m.Worlds[id] = readmodel.World{ID: id, Ruler: w.Ruler, History: history, Version: w.Version()}
		case "Example":
			x, err := examples.Get(ctx, id)
			if err != nil {
				t.Fatalf("replaying example %s: %v", id, err)
			}
			m.Examples[id] = readmodel.Example{ID: id, Foo: x.Foo, Version: x.Version()}
		default:
			t.Fatalf("aggregate %s of unexpected type %q", id, typ)
		}
	}
	return m
}

func sortCounts(c []readmodel.Count) {
	sort.Slice(c, func(i, j int) bool {
		if c[i].AggregateType != c[j].AggregateType {
			return c[i].AggregateType < c[j].AggregateType
		}
		return c[i].EventType < c[j].EventType
	})
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// getJSONErr GETs url into v (when 200) and returns the status.
func getJSONErr(url string, v any) (int, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: decoding: %w", url, err)
	}
	return resp.StatusCode, nil
}

// diff compares the read model served at base with want and returns the
// differences (at most a few), or nil when it is equal. Every aggregate
// of want is fetched by id (GET /worlds lists only the first 100); an
// extra aggregate in the read model would show in the counts.
func diff(base string, want model) ([]string, error) {
	var out []string
	var counts []readmodel.Count
	if _, err := getJSONErr(base+"/counts", &counts); err != nil {
		return nil, err
	}
	if !reflect.DeepEqual(counts, want.Counts) {
		return []string{fmt.Sprintf("counts = %+v, want %+v", counts, want.Counts)}, nil
	}
	for id, w := range want.Worlds {
		var got readmodel.World
		status, err := getJSONErr(base+"/worlds/"+id.String(), &got)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK || !reflect.DeepEqual(got, w) {
			out = append(out, fmt.Sprintf("world %s: status %d, %s", id, status, worldDiff(got, w)))
		}
		if len(out) >= 5 {
			return out, nil
		}
	}
	for id, x := range want.Examples {
		var got readmodel.Example
		status, err := getJSONErr(base+"/examples/"+id.String(), &got)
		if err != nil {
			return nil, err
		}
		if status != http.StatusOK || got != x {
			out = append(out, fmt.Sprintf("example %s: status %d, got %+v, want %+v", id, status, got, x))
		}
		if len(out) >= 5 {
			return out, nil
		}
	}
	return out, nil
}

func worldDiff(got, want readmodel.World) string {
	return fmt.Sprintf("got ruler %q version %d history %d items (last %v); want ruler %q version %d history %d items (last %v)",
		got.Ruler, got.Version, len(got.History), last(got.History), want.Ruler, want.Version, len(want.History), last(want.History))
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// drained waits until the relay has published the whole outbox.
func (s *stack) drained(timeout time.Duration) {
	s.t.Helper()
	proctest.Eventually(s.t, timeout, 50*time.Millisecond, "outbox drained by the relay", func() (bool, string) {
		b, err := s.app.Outbox().Backlog(context.Background(), outbox.Shard{})
		if err != nil {
			return false, err.Error()
		}
		return b.Messages == 0, fmt.Sprintf("backlog %d messages", b.Messages)
	})
}

// converge waits until the outbox is drained and the read model served
// by the projectors equals want, with every projector ready (caught up).
func (s *stack) converge(want model, timeout time.Duration, ps ...*projProc) {
	s.t.Helper()
	s.drained(timeout)
	proctest.Eventually(s.t, timeout, 200*time.Millisecond, "read model equal to the event store", func() (bool, string) {
		for _, p := range ps {
			if !p.Running() {
				s.t.Fatalf("%s exited: %v\n%s", p.Name(), p.Err(), proctest.Tail(p.Output(), 3000))
			}
			var body any
			if status, err := getJSONErr(p.base+"/readyz", &body); err != nil || status != http.StatusOK {
				return false, fmt.Sprintf("%s not ready: status %d, %v", p.Name(), status, err)
			}
		}
		d, err := diff(ps[0].base, want)
		if err != nil {
			return false, err.Error()
		}
		return len(d) == 0, strings.Join(d, "\n")
	})
}

// TestProcessRelayToProjector: events saved in the event store reach the
// read model through the relay and the projector processes, and the read
// model served over HTTP is the one replayed from the event store, even
// though the relay is killed once on the way.
func TestProcessRelayToProjector(t *testing.T) {
	s := newStack(t)
	relay := s.startRelay()
	p := s.startProjector("projector")
	stop := s.startWriters(2, 5, 5*time.Millisecond)
	// Write while both run: the pipeline is fed live, not from a backlog.
	// Halfway, the relay is killed and replaced, which may publish a batch
	// twice: duplicates the projector must not count.
	waitEvents(t, s, 1000, 60*time.Second)
	relay.Kill(t)
	s.startRelay()
	waitEvents(t, s, 2000, 60*time.Second)
	stop()
	want := s.expected()
	s.converge(want, 60*time.Second, p)

	var list []readmodel.World
	if status, err := getJSONErr(p.base+"/worlds", &list); err != nil || status != http.StatusOK || len(list) == 0 {
		t.Errorf("GET /worlds: status %d, %d worlds, %v", status, len(list), err)
	}
	for _, w := range list {
		if !reflect.DeepEqual(w, want.Worlds[w.ID]) {
			t.Errorf("GET /worlds: %s", worldDiff(w, want.Worlds[w.ID]))
		}
	}
	stopAt := time.Now()
	if err := p.Stop(15 * time.Second); err != nil {
		t.Errorf("projector after SIGTERM: %v", err)
	}
	t.Logf("projector stopped %s after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
	t.Logf("%d events, %d worlds, %d examples: read model exact", want.Events, len(want.Worlds), len(want.Examples))
}

// waitEvents waits until the store holds at least n events.
func waitEvents(t *testing.T, s *stack, n uint64, timeout time.Duration) {
	t.Helper()
	proctest.Eventually(t, timeout, 50*time.Millisecond, fmt.Sprintf("%d events written", n), func() (bool, string) {
		c := s.eventCount()
		return c >= n, fmt.Sprintf("%d events", c)
	})
}

// eventCount returns the number of events in the store: the last
// notification id (ids never skip), found by binary search (up to 2^21).
func (s *stack) eventCount() uint64 {
	s.t.Helper()
	ctx := context.Background()
	var n uint64
	for step := uint64(1 << 20); step > 0; step /= 2 {
		ns, err := s.app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: n + step, Limit: 1})
		if err != nil {
			s.t.Fatalf("notification log: %v", err)
		}
		if len(ns) > 0 {
			n += step
		}
	}
	return n
}

// appliedCount returns the sum of the event counts in the read model
// served at base: how many events the counts projection has applied.
func appliedCount(base string) (int64, error) {
	var counts []readmodel.Count
	if _, err := getJSONErr(base+"/counts", &counts); err != nil {
		return 0, err
	}
	var n int64
	for _, c := range counts {
		n += c.Count
	}
	return n, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// projections are the projector's three projections (their tracking
// keys).
var projections = []string{"worlds", "examples", "event_counts"}

// TestProcessKill9MidBatch kills the projector with SIGKILL over many
// cycles while writers keep the pipeline full, restarting it in the same
// consumer groups each time; the final read model must equal the one
// computed from the event store. Each restart begins with a backlog
// (events written while no projector ran) and is killed at a random
// point after it has started applying again, so the kills land while
// batches of up to 500 events are being applied.
func TestProcessKill9MidBatch(t *testing.T) {
	cycles := envInt(killCyclesEnv, 15)
	if testing.Short() {
		cycles = 5
	}
	s := newStack(t)
	s.startRelay()
	stop := s.startWriters(2, 10, 10*time.Millisecond)
	waitEvents(t, s, 1000, 60*time.Second)

	loop := time.Now()
	var p *projProc
	var backlogs []int64 // events written but not applied, at each kill
	withBacklog := 0
	for i := range cycles {
		p = s.startProjector("projector-" + strconv.Itoa(i))
		// Kill once it is applying again, at a random point after that.
		start, err := appliedCount(p.base)
		if err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
		proctest.Eventually(t, 30*time.Second, 10*time.Millisecond, p.Name()+" applying", func() (bool, string) {
			if !p.Running() {
				t.Fatalf("%s exited on its own: %v\n%s", p.Name(), p.Err(), proctest.Tail(p.Output(), 3000))
			}
			n, err := appliedCount(p.base)
			return err == nil && n > start, fmt.Sprintf("applied %d, %v", n, err)
		})
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		applied, err := appliedCount(p.base)
		written := int64(s.eventCount())
		p.Kill(t)
		if err == nil {
			backlogs = append(backlogs, written-applied)
			if written > applied {
				withBacklog++
			}
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // let a backlog build up
	}
	loopTook := time.Since(loop)
	p = s.startProjector("projector-final")
	time.Sleep(500 * time.Millisecond) // the final projector also starts under load
	stop()
	want := s.expected()
	conv := time.Now()
	s.converge(want, 90*time.Second, p)
	dups, _, _ := proctest.Metric(p.base+"/metrics", "esflow_projection_duplicates_total")
	if withBacklog == 0 {
		t.Errorf("no kill landed while events were waiting to be applied: the test did not exercise a crash mid-stream")
	}
	t.Logf("%d kill -9 cycles in %s, %d with events in flight (events not yet applied at each kill: %v); %d events, %d worlds, %d examples: read model exact %s after the writers stopped; the last projector skipped %v redelivered events",
		cycles, loopTook.Round(time.Millisecond), withBacklog, backlogs, want.Events, len(want.Worlds), len(want.Examples), time.Since(conv).Round(time.Millisecond), dups)
}

// assignment is, per projection, each live member's partitions
// ("topic/partition"), by member name (-member-name), as the lease rows
// in the read-model database say.
type assignment map[string]map[string][]string

func (s *stack) assignment(ctx context.Context) (assignment, error) {
	pool, err := pgxpool.New(ctx, s.rmURL)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT l.projection, m.host, l.topic, l.kafka_partition
FROM `+projection.LeasesTable+` l JOIN `+projection.MembersTable+` m ON m.projection = l.projection AND m.member = l.owner
ORDER BY 1, 2, 3, 4`)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer rows.Close()
	a := assignment{}
	for rows.Next() {
		var proj, member, topic string
		var part int
		if err := rows.Scan(&proj, &member, &topic, &part); err != nil {
			return nil, err
		}
		if a[proj] == nil {
			a[proj] = map[string][]string{}
		}
		a[proj][member] = append(a[proj][member], topic+"/"+strconv.Itoa(part))
	}
	return a, rows.Err()
}

// waitAssignment waits until every projection's partitions are all held,
// shared by n members that each hold at least one.
func (s *stack) waitAssignment(n int, timeout time.Duration) assignment {
	t := s.t
	t.Helper()
	topics := map[string]int{"worlds": 1, "examples": 1, "event_counts": 2}
	var a assignment
	proctest.Eventually(t, timeout, 20*time.Millisecond, fmt.Sprintf("%d members sharing each projection's partitions", n), func() (bool, string) {
		var err error
		if a, err = s.assignment(context.Background()); err != nil {
			return false, err.Error()
		}
		for _, g := range projections {
			ms := a[g]
			if len(ms) != n {
				return false, fmt.Sprintf("projection %s: %d members %v", g, len(ms), ms)
			}
			total := 0
			for _, parts := range ms {
				total += len(parts)
			}
			if total != topics[g]*partitions {
				return false, fmt.Sprintf("projection %s: %d partitions held, want %d: %v", g, total, topics[g]*partitions, ms)
			}
		}
		return true, ""
	})
	return a
}

// TestProcessTwoReplicasFailover runs two projector processes on one
// read-model database: they share the partitions (leases) and both apply
// events; one is killed with SIGKILL; the other takes its partitions over
// (its session's advisory lock went with it) and the read model stays
// exact.
func TestProcessTwoReplicasFailover(t *testing.T) {
	s := newStack(t)
	s.startRelay()
	p1 := s.startProjector("replica-1")
	p2 := s.startProjector("replica-2")
	begin := time.Now()
	shared := s.waitAssignment(2, 60*time.Second)
	t.Logf("partitions shared %s after the second replica started", time.Since(begin).Round(time.Millisecond))

	// Phase 1: both replicas apply.
	stop := s.startWriters(2, 5, 5*time.Millisecond)
	waitEvents(t, s, 1500, 60*time.Second)
	stop()
	want := s.expected()
	s.converge(want, 60*time.Second, p1, p2)
	t.Logf("phase 1: %d events applied by both replicas (%s)", want.Events, time.Since(begin).Round(time.Millisecond))
	after, err := s.assignment(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after, shared) {
		t.Fatalf("the assignment changed while both replicas ran:\nbefore %v\nafter  %v", shared, after)
	}
	// Every event was applied, each partition by the one member that held
	// it all along; so a member whose partitions received events applied
	// them. The relay maps keys (aggregate ids) to partitions with
	// Murmur2, like kafka.Murmur2Balancer.
	used := map[string]bool{}
	all := make([]int, partitions)
	for i := range all {
		all[i] = i
	}
	for id := range want.Worlds {
		p := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(id.String())}, all...)
		used[readmodel.WorldTopic+"/"+strconv.Itoa(p)] = true
	}
	for member, parts := range shared["worlds"] {
		n := 0
		for _, p := range parts {
			if used[p] {
				n++
			}
		}
		if n == 0 {
			t.Errorf("worlds member %s (partitions %v) received no events: cannot show that both replicas applied", member, parts)
		}
	}

	// And each process says so itself.
	for _, p := range []*projProc{p1, p2} {
		n, ok, err := proctest.Metric(p.base+"/metrics", "esflow_projection_applied_total")
		if err != nil || !ok || n == 0 {
			t.Errorf("%s: esflow_projection_applied_total = %v (present %v, %v), want > 0", p.Name(), n, ok, err)
		}
	}

	// Phase 2: kill one replica while events flow; the other takes over.
	stop = s.startWriters(2, 5, 5*time.Millisecond)
	waitEvents(t, s, s.eventCount()+300, 60*time.Second)
	p1.Kill(t)
	killed := time.Now()
	waitEvents(t, s, s.eventCount()+300, 60*time.Second)
	stop()
	s.waitAssignment(1, 90*time.Second)
	took := time.Since(killed)
	stop = s.startWriters(2, 5, 5*time.Millisecond)
	waitEvents(t, s, s.eventCount()+500, 60*time.Second) // events after the takeover
	stop()
	want = s.expected()
	conv := time.Now()
	s.converge(want, 60*time.Second, p2)
	t.Logf("phase 2: converged in %s", time.Since(conv).Round(time.Millisecond))
	t.Logf("shared assignment %v; replica-2 alone %s after the kill; %d events, %d worlds, %d examples: read model exact",
		shared["worlds"], took.Round(time.Millisecond), want.Events, len(want.Worlds), len(want.Examples))
}

// readTopic returns every message of topic, reading each partition up to
// its current end.
func readTopic(t *testing.T, addr, topic string) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for p := range partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", addr, topic, p)
		if err != nil {
			t.Fatalf("dial %s/%d: %v", topic, p, err)
		}
		end, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatalf("end of %s/%d: %v", topic, p, err)
		}
		if end == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				t.Fatalf("reading %s/%d up to offset %d: %v", topic, p, end, err)
			}
			out = append(out, m)
			if m.Offset+1 >= end {
				break
			}
		}
		r.Close()
	}
	return out
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestProcessPoisonToDeadLetters puts two poison messages on the World
// topic between ordinary events: an envelope whose payload the worlds
// handler cannot decode, and a value that is no envelope at all. Each
// lands in the dead-letter topic of every projection that cannot apply
// it, with the error attached, and every other event is applied.
func TestProcessPoisonToDeadLetters(t *testing.T) {
	s := newStack(t)
	s.startRelay()
	p := s.startProjector("projector")
	ctx := context.Background()

	// Worlds whose partitions carry events before and after the poison.
	var worlds []*domain.World
	for i := range 10 {
		w, err := domain.NewWorld("ruler " + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.MakeItSo("before"); err != nil {
			t.Fatal(err)
		}
		if err := s.app.Save(ctx, w); err != nil {
			t.Fatal(err)
		}
		worlds = append(worlds, w)
	}
	s.drained(30 * time.Second)

	// Poison 1: a World's first event whose payload does not decode.
	poisonWorld, err := domain.NewWorld("never")
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := (&outbox.Builder{}).Messages(poisonWorld.PendingEvents(), make([][]byte, 1), false)
	if err != nil {
		t.Fatal(err)
	}
	env, err := outbox.DecodeEnvelope(msgs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	env.Payload = json.RawMessage(`{"attributes": "not an object"}`)
	badPayload, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	poison1 := kafka.Message{Topic: readmodel.WorldTopic, Key: []byte(worlds[0].ID().String()), Value: badPayload}
	for _, h := range msgs[0].Headers {
		poison1.Headers = append(poison1.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	// Poison 2: not an envelope.
	poison2 := kafka.Message{Topic: readmodel.WorldTopic, Key: []byte(worlds[1].ID().String()), Value: []byte("this is not an event")}
	writer := &kafka.Writer{
		Addr: kafka.TCP(s.broker.Addr()), Balancer: kafka.Murmur2Balancer{},
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll,
	}
	if err := writer.WriteMessages(ctx, poison1, poison2); err != nil {
		t.Fatalf("writing poison: %v", err)
	}
	_ = writer.Close()

	// More events on the same worlds, hence after the poison in the same
	// partitions.
	for _, w := range worlds {
		if err := w.MakeItSo("after"); err != nil {
			t.Fatal(err)
		}
		if err := w.SetRuler("new " + w.Ruler); err != nil {
			t.Fatal(err)
		}
		if err := s.app.Save(ctx, w); err != nil {
			t.Fatal(err)
		}
	}

	// The counts projection does not look at payloads: it counts poison 1
	// and dead-letters poison 2. The worlds projection dead-letters both.
	want := s.expected()
	for i, c := range want.Counts {
		if c.AggregateType == "World" && c.EventType == "Created" {
			want.Counts[i].Count++
		}
	}
	s.converge(want, 60*time.Second, p)
	var got readmodel.World
	if status, err := getJSONErr(p.base+"/worlds/"+poisonWorld.ID().String(), &got); err != nil || status != http.StatusNotFound {
		t.Errorf("GET the poisoned world: status %d (%+v), %v; want 404", status, got, err)
	}

	for _, c := range []struct {
		topic, projection string
		want              []kafka.Message
	}{
		{"worlds.dlq", "worlds", []kafka.Message{poison1, poison2}},
		{"event_counts.dlq", "event_counts", []kafka.Message{poison2}},
		{"examples.dlq", "examples", nil},
	} {
		var dead []kafka.Message
		proctest.Eventually(t, 30*time.Second, 100*time.Millisecond, c.topic+" filled", func() (bool, string) {
			dead = readTopic(t, s.broker.Addr(), c.topic)
			return len(dead) >= len(c.want), fmt.Sprintf("%d dead letters", len(dead))
		})
		seen := map[string]bool{}
		for _, m := range dead {
			if header(m, projection.HeaderDLQError) == "" || header(m, projection.HeaderDLQProjection) != c.projection ||
				header(m, projection.HeaderDLQSourceTopic) != readmodel.WorldTopic || header(m, projection.HeaderDLQSourceOffset) == "" {
				t.Errorf("%s: dead letter without its error and origin: headers %v", c.topic, m.Headers)
			}
			seen[string(m.Value)] = true
		}
		for _, w := range c.want {
			if !seen[string(w.Value)] {
				t.Errorf("%s: %q is missing", c.topic, proctest.Tail(string(w.Value), 80))
			}
		}
		if len(seen) != len(c.want) {
			t.Errorf("%s: %d distinct dead letters, want %d", c.topic, len(seen), len(c.want))
		}
		for _, m := range dead {
			t.Logf("%s: error %q", c.topic, header(m, projection.HeaderDLQError))
		}
	}
}

// TestReadModelDiffDetects makes sure the comparison behind every process
// test sees a wrong count, a wrong or missing aggregate, so those tests
// cannot pass vacuously. The read model is served from memory here.
func TestReadModelDiffDetects(t *testing.T) {
	w1, w2, x1 := uuid.New(), uuid.New(), uuid.New()
	want := model{
		Counts: []readmodel.Count{{AggregateType: "World", EventType: "Created", Count: 2}},
		Worlds: map[uuid.UUID]readmodel.World{
			w1: {ID: w1, Ruler: "a", History: []string{"x", "y"}, Version: 3},
			w2: {ID: w2, Ruler: "b", History: []string{}, Version: 1},
		},
		Examples: map[uuid.UUID]readmodel.Example{x1: {ID: x1, Foo: "f", Version: 2}},
	}
	for _, tc := range []struct {
		name   string
		change func(m *model)
		differ bool
	}{
		{"exact", func(*model) {}, false},
		{"a count too high", func(m *model) { m.Counts[0].Count++ }, true},
		{"an extra count row", func(m *model) {
			m.Counts = append(m.Counts, readmodel.Count{AggregateType: "World", EventType: "SomethingHappened", Count: 1})
		}, true},
		{"a world's version behind", func(m *model) { w := m.Worlds[w1]; w.Version--; m.Worlds[w1] = w }, true},
		{"a world's history reordered", func(m *model) {
			w := m.Worlds[w1]
			w.History = []string{"y", "x"}
			m.Worlds[w1] = w
		}, true},
		{"a world missing", func(m *model) { delete(m.Worlds, w2) }, true},
		{"an example's attribute", func(m *model) { x := m.Examples[x1]; x.Foo = "g"; m.Examples[x1] = x }, true},
	} {
		served := model{Counts: slices.Clone(want.Counts), Worlds: maps.Clone(want.Worlds), Examples: maps.Clone(want.Examples)}
		tc.change(&served)
		mux := http.NewServeMux()
		mux.HandleFunc("GET /counts", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(served.Counts) })
		mux.HandleFunc("GET /worlds/{id}", func(w http.ResponseWriter, r *http.Request) {
			if v, ok := served.Worlds[uuid.MustParse(r.PathValue("id"))]; ok {
				_ = json.NewEncoder(w).Encode(v)
				return
			}
			http.NotFound(w, r)
		})
		mux.HandleFunc("GET /examples/{id}", func(w http.ResponseWriter, r *http.Request) {
			if v, ok := served.Examples[uuid.MustParse(r.PathValue("id"))]; ok {
				_ = json.NewEncoder(w).Encode(v)
				return
			}
			http.NotFound(w, r)
		})
		srv := httptest.NewServer(mux)
		d, err := diff(srv.URL, want)
		srv.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (len(d) > 0) != tc.differ {
			t.Errorf("%s: diff %v, want a difference: %v", tc.name, d, tc.differ)
		}
	}
}
