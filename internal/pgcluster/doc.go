// Package pgcluster runs a throwaway PostgreSQL cluster from the locally
// installed server binaries. It is shared by internal/pgtest (one cluster
// per test process), cmd/esbench (a cluster with PostgreSQL's default
// durability settings) and the integration suite (a cluster it restarts).
//
// [Start] finds the binaries ([BinDir]: pg_config, PATH, then the highest
// /usr/lib/postgresql/*/bin), runs initdb in a fresh temporary directory,
// and starts the postmaster on a free loopback port with only the server
// settings given in [Options]. As root, initdb and postgres run as the
// "postgres" OS user, since both refuse to run as root.
//
// A [Cluster] can be stopped with a fast shutdown ([Cluster.Stop]) and
// started again on the same port and data directory ([Cluster.Start]);
// [Cluster.Close] stops it and removes the directory.
//
// Should the owning process die without calling Close, the kernel sends
// the postmaster SIGQUIT (a parent-death signal), and the directory,
// which records its owner's pid, can be removed by a later process with
// [ReapStale].
package pgcluster
