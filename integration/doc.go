// Package integration holds end-to-end tests over real processes: the
// built binaries, run as subprocesses against real databases, checked from
// outside. Per-service process tests (kill -9 loops, broker outages,
// failover) live beside their commands, e.g. cmd/relay.
package integration
