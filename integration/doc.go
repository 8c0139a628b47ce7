// Package integration holds end-to-end tests over real processes: the
// built binaries, run as subprocesses against real databases, checked from
// outside. Per-service process tests (kill -9 loops, broker outages,
// failover) live beside their commands, e.g. cmd/relay.
//
// TestFaults (faults_test.go) is the pipeline under fire: two cmd/writer
// processes under HTTP load, two cmd/relay and two cmd/projector
// processes, and an independent checker in the test process that reads
// the topic with its own Kafka client (no consumer group) and reads the
// read models over the projectors' HTTP API. While the load runs it kills
// relays and projectors with SIGKILL in a loop (20 cycles each), pauses
// the active relay and a projector with SIGSTOP, restarts PostgreSQL with
// a fast shutdown and stops and starts the broker. Then it verifies that
// every event in the store reached Kafka (lost = 0, outbox backlog 0),
// that each aggregate's versions arrive in order (duplicates are counted,
// not errors), that the read models equal what the event store implies
// (versions, histories, per-type counts: exactly-once effect), that no
// acknowledged write is missing from the store, and that concurrent
// writers on one aggregate get exactly one winner per version and 409
// for the rest. It prints a summary, lines starting "integration:", with
// the time to recover after each kind of fault.
//
// Where it runs: DATABASE_URL (or ESFLOW_TEST_DATABASE_URL) and
// KAFKA_BROKERS point it at existing servers (then the PostgreSQL restart,
// resp. the broker fault, is left out: they are not the suite's to stop);
// otherwise it starts a PostgreSQL cluster of its own from the installed
// binaries and the embedded broker (pkg/broker). The first summary line
// says which. ESFLOW_SOAK=10m repeats the fault rounds for that long;
// ESFLOW_FAULTS=projector runs only the projector faults (table mode).
//
//	go test -v -run '^TestFaults$' ./integration/
//	ESFLOW_SOAK=10m go test -v -timeout 30m -run '^TestFaults$' ./integration/
//
// The helpers (process supervision, the checker, the load, the restartable
// PostgreSQL cluster) are in package integration/suite.
package integration
