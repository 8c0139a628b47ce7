package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/relay/kafkapub"
)

// TestTopicsSurviveRestart runs the esflow binary as a process on the
// embedded defaults, writes World commands and a generic stream, stops it
// (SIGTERM) and starts it again on the same data directory. A new Kafka
// client reading the topics from the beginning sees every event exactly
// once, in version order per aggregate, keyed by aggregate id, with the
// CloudEvents headers (ce_source from ESFLOW_CLOUDEVENTS_SOURCE), and the
// read models hold each event once.
func TestTopicsSurviveRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bins := proctest.NewBuilds()
	t.Cleanup(bins.Close)
	bin := bins.Path(t, "github.com/esflow/esflow/cmd/esflow")
	dir := filepath.Join(t.TempDir(), "data")
	httpAddr, brokerAddr := proctest.FreeAddr(t), proctest.FreeAddr(t)
	base := "http://" + httpAddr
	run := func() *proctest.Process {
		p := proctest.Start(t, proctest.Command{
			Name: "esflow", Path: bin,
			Args: []string{"-data", dir, "-http-addr", httpAddr, "-broker-addr", brokerAddr},
			// ce_source through its variable: the relay's CloudEvents
			// headers are configured from the environment end to end.
			Env: proctest.Environ(os.Environ(), []string{"ESFLOW_CLOUDEVENTS_SOURCE=/test/esflow"},
				[]string{"DATABASE_URL", "DB_URI", "READ_DATABASE_URL", "KAFKA_BROKERS", "CIPHER_KEY", "WRITER_TOKEN", "ESFLOW_*"}),
		})
		p.WaitHTTP(t, base+"/readyz", 60*time.Second)
		return p
	}

	p := run()
	var worlds []string
	for i := range 3 {
		var c struct{ ID string }
		if s := do(t, "POST", base+"/v1/worlds", fmt.Sprintf(`{"ruler":"r%d"}`, i), &c); s != http.StatusCreated {
			t.Fatalf("create world: %d", s)
		}
		if s := do(t, "POST", base+"/v1/worlds/"+c.ID+"/make-it-so", `{"what":"before"}`, nil); s != http.StatusOK {
			t.Fatalf("make-it-so: %d", s)
		}
		worlds = append(worlds, c.ID)
	}
	ledger := uuid.NewString()
	if s := do(t, "POST", base+"/v1/streams/"+ledger+"/events",
		`{"expected_version":0,"aggregate_type":"Ledger","events":[{"type":"Opened","data":{"n":1}},{"type":"Credited","data":{"n":2}}]}`, nil); s != http.StatusCreated {
		t.Fatalf("generic append: %d", s)
	}
	for _, id := range worlds {
		poll(t, ctx, "world "+id+" projected", func() bool {
			var w struct{ Version uint64 }
			return do(t, "GET", base+"/read/worlds/"+id, "", &w) == http.StatusOK && w.Version == 2
		})
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, proctest.Tail(p.Output(), 20))
	}

	p = run()
	defer func() { _ = p.Stop(30 * time.Second) }()
	// One more event per aggregate after the restart: in each partition it
	// comes after everything the topic held for that key, so reading up
	// to it has read all of that key's older messages.
	for _, id := range worlds {
		if s := do(t, "POST", base+"/v1/worlds/"+id+"/make-it-so", `{"what":"after"}`, nil); s != http.StatusOK {
			t.Fatalf("make-it-so after restart: %d", s)
		}
	}
	if s := do(t, "POST", base+"/v1/streams/"+ledger+"/events",
		`{"expected_version":2,"events":[{"type":"Credited","data":{"n":3}}]}`, nil); s != http.StatusCreated {
		t.Fatalf("generic append after restart: %d", s)
	}

	read := func(topic string, keys []string, perKey uint64) {
		t.Helper()
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: []string{brokerAddr}, Topic: topic, GroupID: "watch-" + uuid.NewString(),
			StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
		})
		defer r.Close()
		next := map[string]uint64{} // key -> next expected version
		seen := map[string]bool{}   // event ids
		done := 0
		for done < len(keys) {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatalf("read %s: %v (versions so far %v)", topic, err, next)
			}
			var eventID, version, ceID, ceSource string
			for _, h := range m.Headers {
				switch h.Key {
				case outbox.HeaderEventID:
					eventID = string(h.Value)
				case outbox.HeaderAggregateVersion:
					version = string(h.Value)
				case kafkapub.HeaderCEID:
					ceID = string(h.Value)
				case kafkapub.HeaderCESource:
					ceSource = string(h.Value)
				}
			}
			if ceID != eventID || ceSource != "/test/esflow" {
				t.Fatalf("%s: event %s: ce_id %q, ce_source %q", topic, eventID, ceID, ceSource)
			}
			if seen[eventID] {
				t.Fatalf("%s: event %s (key %s version %s) published twice", topic, eventID, m.Key, version)
			}
			seen[eventID] = true
			v, err := strconv.ParseUint(version, 10, 64)
			if err != nil {
				t.Fatalf("%s: version header %q", topic, version)
			}
			key := string(m.Key)
			if v != next[key] {
				t.Fatalf("%s: key %s: version %d, want %d (lost or out of order)", topic, key, v, next[key])
			}
			next[key] = v + 1
			if v+1 == perKey {
				done++
			}
		}
		for _, k := range keys {
			if next[k] != perKey {
				t.Fatalf("%s: key %s: %d events, want %d", topic, k, next[k], perKey)
			}
		}
	}
	read("esflow.World", worlds, 3)
	read("esflow.Ledger", []string{ledger}, 3)

	// The read models applied the republished events once.
	for _, id := range worlds {
		var w struct {
			Version uint64
			History []string
		}
		poll(t, ctx, "world "+id+" at version 3", func() bool {
			return do(t, "GET", base+"/read/worlds/"+id, "", &w) == http.StatusOK && w.Version == 3
		})
		if len(w.History) != 2 || w.History[0] != "before" || w.History[1] != "after" {
			t.Fatalf("read model of %s: %+v", id, w)
		}
	}
}
