// Command esbench measures the esflow pipeline next to the raw limits of the
// same machine (issue 7) and rewrites the generated section of BENCHMARKS.md,
// with SVG plots under docs/bench.
//
//	go run ./cmd/esbench                 # every workload, full sizes
//	go run ./cmd/esbench -quick          # small sizes: a smoke test
//	go run ./cmd/esbench -only w1,w3     # a subset
//	go run ./cmd/esbench -out BENCHMARKS.md -plots docs/bench
//	go run ./cmd/esbench -only w2 -cpuprofile w2.pprof   # then go tool pprof
//
// PostgreSQL comes from DATABASE_URL (an admin connection: esbench creates
// and drops its own databases there) or, when unset, from a throwaway
// cluster started with initdb and postgres from the local binaries, with
// default settings (default durability). The Kafka broker comes from
// KAFKA_BROKERS or, when unset, from the embedded broker (pkg/broker, 8
// partitions) run in a child process: esbench starts itself again with the
// hidden -broker flag.
//
// Each workload runs side by side with its raw limit in the same run: a
// plain pgx program writing the same rows, a plain kafka-go producer or
// consumer moving the same messages. Every figure that has a target in the
// issue is printed next to it with PASS or MISS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/esflow/esflow/internal/cli"
)

func main() {
	if brokerChild(os.Args[1:]) {
		if err := runBroker(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "esbench -broker:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	cli.Exit("esbench", err)
}

// command describes esbench for its -h.
var command = cli.Command{
	Name:    "esbench",
	Summary: "Measures the pipeline next to the raw limits of the machine and rewrites BENCHMARKS.md's generated section. The components log only errors unless -v or -log-level is given.",
	Env: []cli.Var{
		{Name: "DATABASE_URL", Usage: "an admin connection to PostgreSQL (default: a throwaway local cluster)"},
		{Name: "KAFKA_BROKERS", Usage: "a Kafka cluster (default: the embedded broker in a child process)"},
	},
}

// options are the parsed command line.
type options struct {
	quick bool
	only  map[string]bool
	out   string
	// cpuProfile is the file a CPU profile of the run goes to ("" none).
	cpuProfile string
	plots      string
	scale      scale
	args       []string // as given, for the report
	logLevel   slog.Level
	logJSON    bool // -log-format json
}

func parseOptions(args []string, stdout io.Writer) (options, error) {
	fs := cli.New(command, os.Getenv, stdout)
	var (
		quick = fs.Bool("quick", false, "small sizes: a smoke test, not figures")
		only  = fs.String("only", "", "comma-separated workloads to run (w1..w7); default all")
		out   = fs.String("out", "BENCHMARKS.md", "report to rewrite (only its generated section)")
		plots = fs.String("plots", "docs/bench", "directory of the SVG plots (linked relative to -out)")
		_     = fs.Bool("broker", false, "internal: run the embedded broker and print its address")
		debug = fs.Bool("v", false, "log the components' warnings and info")
		cpu   = fs.String("cpuprofile", "", "write a CPU profile of the run (this process: the pipeline's side and the raw side, not PostgreSQL or the broker) to `file`")
	)
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	o := options{quick: *quick, out: *out, plots: *plots, cpuProfile: *cpu, args: args, scale: fullScale(), logLevel: slog.LevelError}
	if *quick {
		o.scale = quickScale()
	}
	o.logJSON = fs.LogFormat() == "json"
	switch {
	case fs.Set("log-level"):
		o.logLevel = fs.LogLevel()
	case *debug:
		o.logLevel = slog.LevelInfo
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, w := range strings.Split(*only, ",") {
			w = strings.TrimSpace(strings.ToLower(w))
			if !knownWorkload(w) {
				return options{}, fmt.Errorf("-only: unknown workload %q (want w1..w7)", w)
			}
			o.only[w] = true
		}
	}
	return o, nil
}

// run is main without the process.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args, stdout)
	if err != nil {
		return err
	}
	return bench(ctx, o, stdout)
}

// bench sets up the servers, runs the selected workloads and writes the
// report.
func bench(ctx context.Context, o options, stdout io.Writer) (err error) {
	start := time.Now()
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel})
	if o.logJSON {
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel})
	}
	logger := slog.New(handler)
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stop()) }()
	}
	pg, err := startPostgres(ctx, say)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pg.Close()) }()
	kb, err := startKafka(ctx, say)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, kb.Close()) }()

	env := &env{pg: pg, kafka: kb, scale: o.scale, log: logger, say: say, runID: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)}
	m, err := describeMachine(ctx, pg)
	if err != nil {
		return err
	}
	rep := &report{machine: m, command: commandLine(o.args), quick: o.quick, started: start}
	say("esbench: %s", rep.command)
	say("machine: %s; %s", m.summary(), start.UTC().Format("2006-01-02 15:04 MST"))

	for _, w := range workloads {
		if o.only != nil && !o.only[w.id] {
			continue
		}
		say("== %s: %s", w.id, w.title)
		if err := pg.checkpoint(ctx); err != nil {
			say("  (no checkpoint before %s: %v)", w.id, err)
		}
		wstart := time.Now()
		sec, err := w.run(ctx, env)
		if err != nil {
			return fmt.Errorf("%s: %w", w.id, err)
		}
		sec.id, sec.title, sec.took = w.id, w.title, time.Since(wstart)
		for _, line := range sec.text() {
			say("%s", line)
		}
		rep.sections = append(rep.sections, sec)
	}
	rep.took = time.Since(start)
	if err := rep.write(o.out, o.plots); err != nil {
		return err
	}
	say("esbench: wrote %s and %d plots in %s (took %s)", o.out, rep.plotCount(), o.plots, rep.took.Round(time.Second))
	return nil
}

// startCPUProfile profiles this process into file until stop is called.
func startCPUProfile(file string) (stop func() error, err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(fmt.Errorf("cpu profile: %w", err), f.Close())
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// commandLine is the exact command that produced a report.
func commandLine(args []string) string {
	parts := []string{"go run ./cmd/esbench"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t\"'") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	var envs []string
	for _, k := range []string{"DATABASE_URL", "KAFKA_BROKERS"} {
		if os.Getenv(k) != "" {
			envs = append(envs, k+"=…")
		}
	}
	if len(envs) > 0 {
		return strings.Join(envs, " ") + " " + strings.Join(parts, " ")
	}
	return strings.Join(parts, " ")
}
