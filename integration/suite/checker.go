package suite

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/outbox"
)

// TopicChecker is the independent Kafka consumer: it reads every
// partition of a topic from the first offset with its own client (no
// consumer group) and checks what arrives. A broker restart on the
// embedded path starts a new epoch (the broker comes back empty).
type TopicChecker struct {
	topic      string
	partitions int

	mu         sync.Mutex
	aggs       map[uuid.UUID]*seenAggregate
	received   int
	duplicates int
	problems   []string
	nProblems  int
	next       map[int]int64 // next offset per partition in this epoch
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

type seenAggregate struct {
	partition int
	seen      map[uint64]bool
	prefix    uint64 // versions 0..prefix-1 have all arrived
}

// NewTopicChecker returns a checker of topic; call Start.
func NewTopicChecker(topic string, partitions int) *TopicChecker {
	return &TopicChecker{topic: topic, partitions: partitions, aggs: map[uuid.UUID]*seenAggregate{}}
}

func (c *TopicChecker) problem(format string, args ...any) {
	c.nProblems++
	if len(c.problems) < 20 {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// Start reads the topic at addr from the first offset of every partition.
func (c *TopicChecker) Start(addr string) {
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.cancel = cancel
	c.next = map[int]int64{}
	c.mu.Unlock()
	for p := range c.partitions {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: []string{addr}, Topic: c.topic, Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		})
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer r.Close()
			_ = r.SetOffset(kafka.FirstOffset)
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
					continue
				}
				c.record(m)
			}
		}()
	}
}

// Stop stops the readers of the current epoch.
func (c *TopicChecker) Stop() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
}

func (c *TopicChecker) record(m kafka.Message) {
	env, err := outbox.DecodeEnvelope(m.Value)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received++
	c.next[m.Partition] = m.Offset + 1
	if err != nil {
		c.problem("partition %d offset %d: undecodable envelope: %v", m.Partition, m.Offset, err)
		return
	}
	if string(m.Key) != env.AggregateID.String() {
		c.problem("partition %d offset %d: key %q is not the aggregate id %s", m.Partition, m.Offset, m.Key, env.AggregateID)
	}
	a := c.aggs[env.AggregateID]
	if a == nil {
		a = &seenAggregate{partition: m.Partition, seen: map[uint64]bool{}}
		c.aggs[env.AggregateID] = a
	}
	if a.partition != m.Partition {
		c.problem("aggregate %s: in partitions %d and %d", env.AggregateID, a.partition, m.Partition)
	}
	v := env.AggregateVersion
	switch {
	case a.seen[v]:
		c.duplicates++ // at least once: allowed, counted
		return
	case v != a.prefix:
		// A version arrived before an earlier one of the same key:
		// per-aggregate order is broken.
		c.problem("aggregate %s: version %d arrived before version %d (partition %d offset %d)", env.AggregateID, v, a.prefix, m.Partition, m.Offset)
	}
	a.seen[v] = true
	for a.seen[a.prefix] {
		a.prefix++
	}
}

// Prefixes returns, per aggregate, how many leading versions arrived.
func (c *TopicChecker) Prefixes() map[uuid.UUID]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[uuid.UUID]uint64, len(c.aggs))
	for id, a := range c.aggs {
		m[id] = a.prefix
	}
	return m
}

// Prefix returns how many of aggregate id's versions (0..n-1) have all
// arrived.
func (c *TopicChecker) Prefix(id uuid.UUID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.aggs[id]; a != nil {
		return a.prefix
	}
	return 0
}

// Has reports whether version v of aggregate id arrived.
func (c *TopicChecker) Has(id uuid.UUID, v uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.aggs[id]
	return a != nil && a.seen[v]
}

// Stats returns the counters and the first problems.
func (c *TopicChecker) Stats() (received, duplicates, problems int, first []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.duplicates, c.nProblems, slices.Clone(c.problems)
}

// CaughtUp reports whether this epoch's readers reached the end of every
// partition at addr.
func (c *TopicChecker) CaughtUp(ctx context.Context, addr string) (bool, error) {
	for p := range c.partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", addr, c.topic, p)
		if err != nil {
			return false, err
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			return false, err
		}
		c.mu.Lock()
		next := c.next[p]
		c.mu.Unlock()
		if next < last {
			return false, nil
		}
	}
	return true, nil
}

// ReadVersions returns the worlds read model's versions (SQL on the
// read-model database: the fast probe used while faults run).
func ReadVersions(ctx context.Context, pool *pgxpool.Pool) (map[uuid.UUID]uint64, error) {
	rows, err := pool.Query(ctx, `SELECT id, version FROM worlds`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[uuid.UUID]uint64{}
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, err
		}
		m[u] = uint64(v)
	}
	return m, rows.Err()
}

// ReadCountTotal returns the sum of the event_counts read model over World
// events.
func ReadCountTotal(ctx context.Context, pool *pgxpool.Pool) (uint64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT COALESCE(SUM(count), 0)::BIGINT FROM event_counts WHERE aggregate_type = 'World'`).Scan(&n)
	return uint64(n), err
}

// Covers reports whether have reaches want for every aggregate, and how
// many fall short.
func Covers(have, want map[uuid.UUID]uint64) (bool, int) {
	short := 0
	for id, v := range want {
		if have[id] < v {
			short++
		}
	}
	return short == 0, short
}

// StoreTruth is what the event store holds: the reference every other
// view is compared with.
type StoreTruth struct {
	// Events counts the notifications.
	Events int
	// Worlds holds every aggregate, replayed.
	Worlds map[uuid.UUID]*domain.World
	// Types counts the events per event type.
	Types map[string]int
	// Versions lists each aggregate's versions in notification order.
	Versions map[uuid.UUID][]uint64
	// LogProblems lists what is wrong with the notification log itself:
	// an aggregate whose versions in log order are not 0, 1, 2, … up to
	// its stored version (a skipped, repeated or reordered event).
	LogProblems []string
}

// ReadStore reads the whole notification log and every aggregate.
func ReadStore(ctx context.Context, dbURL string) (*StoreTruth, error) {
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	app, err := application.New(ctx, application.Config{DatabaseURL: dbURL, Registry: reg, SectionSize: application.MaxSectionSize})
	if err != nil {
		return nil, err
	}
	defer app.Close()
	st := &StoreTruth{Worlds: map[uuid.UUID]*domain.World{}, Types: map[string]int{}, Versions: map[uuid.UUID][]uint64{}}
	r := application.NewReader(app.Log, 0, application.MaxSectionSize)
	for {
		items, err := r.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("read notification log: %w", err)
		}
		if len(items) == 0 {
			break
		}
		for _, it := range items {
			st.Events++
			st.Types[it.Topic]++
			st.Versions[it.OriginatorID] = append(st.Versions[it.OriginatorID], it.OriginatorVersion)
		}
	}
	repo := application.NewRepository(app.Store, func() *domain.World { return new(domain.World) })
	for id := range st.Versions {
		w, err := repo.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("load world %s: %w", id, err)
		}
		st.Worlds[id] = w
		for i, v := range st.Versions[id] {
			if v != uint64(i) {
				st.LogProblems = append(st.LogProblems, fmt.Sprintf("aggregate %s: log position %d holds version %d", id, i, v))
				break
			}
		}
		if got := uint64(len(st.Versions[id])); got != w.Version() {
			st.LogProblems = append(st.LogProblems, fmt.Sprintf("aggregate %s: %d events in the log, version %d in the store", id, got, w.Version()))
		}
	}
	return st, nil
}

// getJSON fetches url into v.
func getJSON(ctx context.Context, client *http.Client, url string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

// CompareReadModels checks every aggregate of the store against the read
// model served by a projector at addr (GET /worlds/{id}, GET /counts):
// same version, same history in the same order, same ruler, and event
// counts equal to the store's (a duplicate applied twice would show in
// both). It returns the number of mismatches and the first few.
func CompareReadModels(ctx context.Context, addr string, st *StoreTruth) (int, []string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	var bad []string
	n := 0
	note := func(format string, args ...any) {
		n++
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	for id, want := range st.Worlds {
		var got readmodel.World
		code, err := getJSON(ctx, client, "http://"+addr+"/worlds/"+id.String(), &got)
		if err != nil {
			return 0, nil, err
		}
		if code != http.StatusOK {
			note("world %s: GET status %d", id, code)
			continue
		}
		hist := want.History
		if hist == nil {
			hist = []string{}
		}
		if got.Version != want.Version() || got.Ruler != want.Ruler || !slices.Equal(got.History, hist) {
			note("world %s: read model version %d ruler %q history %d items; store version %d ruler %q history %d items",
				id, got.Version, got.Ruler, len(got.History), want.Version(), want.Ruler, len(hist))
		}
	}
	var counts []readmodel.Count
	if _, err := getJSON(ctx, client, "http://"+addr+"/counts", &counts); err != nil {
		return 0, nil, err
	}
	got := map[string]int{}
	for _, c := range counts {
		if c.AggregateType == "World" {
			got[c.EventType] = int(c.Count)
		}
	}
	for typ, want := range st.Types {
		if got[typ] != want {
			note("event_counts World/%s: read model %d, store %d", typ, got[typ], want)
		}
	}
	for typ, g := range got {
		if _, ok := st.Types[typ]; !ok {
			note("event_counts World/%s: read model %d, store 0", typ, g)
		}
	}
	return n, bad, nil
}
