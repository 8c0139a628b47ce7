package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/cli"
	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/sqlite"
	"github.com/esflow/esflow/pkg/kafkaenv"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/projection"
)

// Defaults shared by the stack and the operator's commands, so that a
// command finds what the stack with the same configuration uses.
const (
	defaultDataDir    = "esflow-data"
	defaultBrokerAddr = "127.0.0.1:9092"
)

// ErrBrokenChain is matched by the error of stream verify on a stream
// whose hash chain does not verify.
var ErrBrokenChain = errors.New("hash chain broken")

// databases returns the event store's and the read models' URLs: the
// variables, else SQLite files in dataDir (created when mkdir is set).
func databases(getenv func(string) string, dataDir string, mkdir bool) (storeURL, readURL string, err error) {
	storeURL, readURL = getenv(application.EnvDatabaseURL), getenv(EnvReadDatabaseURL)
	if storeURL == "" {
		storeURL = getenv(application.EnvDBURI)
	}
	if mkdir && (storeURL == "" || readURL == "") {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return "", "", fmt.Errorf("data directory: %w", err)
		}
	}
	if storeURL == "" {
		storeURL = "sqlite://" + filepath.Join(dataDir, "events.db")
	}
	if readURL == "" {
		if b, err := application.ParseDatabaseURL(storeURL); err == nil && b == application.BackendPostgres {
			readURL = storeURL
		} else {
			readURL = "sqlite://" + filepath.Join(dataDir, "read.db")
		}
	}
	return storeURL, readURL, nil
}

// adminCmd is one operator's command: its description and what it does
// with its parsed flags.
type adminCmd struct {
	cli.Command
	// flags defines the command's own flags and returns what runs it.
	flags func(fs *cli.FlagSet) func(ctx context.Context, env *adminEnv) error
}

// adminEnv is what every operator's command gets.
type adminEnv struct {
	args           []string
	getenv         func(string) string
	out, logOut    io.Writer
	dataDir        string
	fs             *cli.FlagSet
	storeURL, read string
}

var adminCmds = map[string]adminCmd{
	"stream get": {cli.Command{Args: "ID", NArgs: 1,
		Summary: "Prints a stream's events, decoded (payloads as stored JSON, upcast where the type is known), each one's hash checked."},
		streamGet},
	"stream verify": {cli.Command{Args: "ID", NArgs: 1,
		Summary: "Checks a stream's hash chain: every event's hash over its stored bytes, each one's link to the one before, consecutive versions; prints the head. Exits 1 when the chain is broken."},
		streamVerify},
	"log tail": {cli.Command{
		Summary: "Prints the notification log: the last -n notifications, or from -from on; -f keeps following it."},
		logTail},
	"projection status": {cli.Command{Args: "NAME", NArgs: 1,
		Summary: "Prints a projection's stored state from the read-model database: partition leases and offsets, members, tracked aggregates, unresolved gaps, dead letters."},
		projectionStatus},
	"projection redrive": {cli.Command{Args: "NAME", NArgs: 1,
		Summary: "Applies a projection's dead letters again (from its dead-letter topic: needs Kafka, by default the embedded broker's address)."},
		projectionRedrive},
	"projection rebuild": {cli.Command{Args: "NAME", NArgs: 1,
		Summary: "Rebuilds a projection into shadow tables from the event store (or Kafka) and swaps them in; running projectors keep serving."},
		projectionRebuild},
	"migrate": {cli.Command{
		Summary: "Creates or upgrades the event store's and outbox's schema (DATABASE_URL) and the read models' (READ_DATABASE_URL), then exits."},
		migrate},
}

// admin runs an operator's command: args[0] is not a flag.
func admin(ctx context.Context, args []string, getenv func(string) string, out, logOut io.Writer) error {
	switch args[0] {
	case "help":
		cli.New(stackCommand, getenv, out).PrintUsage(out)
		return nil
	case "version":
		fmt.Fprintln(out, "esflow", cli.Version())
		return nil
	}
	name, rest := args[0], args[1:]
	if _, ok := adminCmds[name]; !ok && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = args[0]+" "+rest[0], rest[1:]
	}
	c, ok := adminCmds[name]
	if !ok {
		return cli.Usagef("unknown command %q (see esflow -h)", strings.Join(args[:min(len(args), 2)], " "))
	}
	c.Name = "esflow " + name
	c.Env = stackVars
	fs := cli.New(c.Command, getenv, out)
	dataDir := fs.String("data", defaultDataDir, "directory of the SQLite files used when no database URL is set")
	fs.Local()
	do := c.flags(fs)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	env := &adminEnv{args: fs.Args(), getenv: getenv, out: out, logOut: logOut, dataDir: *dataDir, fs: fs}
	var err error
	if env.storeURL, env.read, err = databases(getenv, *dataDir, name == "migrate"); err != nil {
		return err
	}
	return do(ctx, env)
}

// openStore opens the event store. Unless create is set, a SQLite file
// that does not exist is an error rather than a new empty store.
func (e *adminEnv) openStore(ctx context.Context, create bool) (*application.Application, error) {
	if !create {
		if err := mustExist(e.storeURL); err != nil {
			return nil, err
		}
	}
	reg := aggregate.NewRegistry()
	domain.Register(reg)
	cfg := application.Config{
		DatabaseURL: e.storeURL, CipherKey: e.getenv(application.EnvCipherKey), Registry: reg,
		CreateTables: create, Logger: e.fs.Logger(e.logOut),
	}
	if create {
		cfg.Outbox = &outbox.Builder{}
	}
	return application.New(ctx, cfg)
}

// mustExist fails for a SQLite URL whose file does not exist.
func mustExist(url string) error {
	if b, err := application.ParseDatabaseURL(url); err != nil || b != application.BackendSQLite {
		return err
	}
	path, inMemory, err := sqlite.ParseDSN(url)
	if err != nil || inMemory {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no database at %s (start esflow, or run esflow migrate, first): %w", url, err)
	}
	return nil
}

// openProjector opens the read-model database with the example
// projections. Kafka is KAFKA_BROKERS, else the embedded broker's default
// address; only redrive (and a poison event in a rebuild) reach it.
func (e *adminEnv) openProjector(ctx context.Context) (*projector.Service, error) {
	if err := mustExist(e.read); err != nil {
		return nil, err
	}
	kcfg := kafkaenv.Config{ClientID: "esflow-admin", Brokers: []string{defaultBrokerAddr}}
	if e.getenv(EnvKafkaBrokers) != "" {
		var err error
		if kcfg, err = kafkaenv.FromEnv("esflow-admin"); err != nil {
			return nil, err
		}
	}
	return projector.Open(ctx, projector.Config{DatabaseURL: e.read, Kafka: kcfg, Logger: e.fs.Logger(e.logOut)})
}

// openStream checks the -o value and the stream id argument, and opens
// the event store.
func (e *adminEnv) openStream(ctx context.Context, output string) (uuid.UUID, *application.Application, error) {
	if err := checkOutput(output); err != nil {
		return uuid.Nil, nil, err
	}
	id, err := uuid.Parse(e.args[0])
	if err != nil {
		return uuid.Nil, nil, cli.Usagef("stream id %q: %v", e.args[0], err)
	}
	app, err := e.openStore(ctx, false)
	return id, app, err
}

// outputFlag defines -o.
func outputFlag(fs *cli.FlagSet) *string {
	return fs.String("o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return cli.Usagef("-o %q: want table or json", o)
	}
	return nil
}

// eventOut is an event as the commands print it.
type eventOut struct {
	Notification  uint64              `json:"notification,omitempty"`
	ID            uuid.UUID           `json:"id"`
	StreamID      uuid.UUID           `json:"stream_id"`
	AggregateType string              `json:"aggregate_type"`
	Type          string              `json:"type"`
	Version       uint64              `json:"version"`
	Time          time.Time           `json:"time"`
	Data          json.RawMessage     `json:"data"`
	Metadata      *aggregate.Metadata `json:"metadata,omitempty"`
	PreviousHash  string              `json:"previous_hash,omitempty"`
	Hash          string              `json:"hash"`
}

func toEventOut(e aggregate.Event) eventOut {
	out := eventOut{ID: e.ID, StreamID: e.AggregateID, AggregateType: e.AggregateType, Type: e.Type, Version: e.Version,
		Time: e.Time.UTC(), PreviousHash: e.PreviousHash, Hash: e.Hash}
	out.Data, _ = e.Payload.(json.RawMessage)
	if e.Metadata.CorrelationID != "" || e.Metadata.CausationID != "" || len(e.Metadata.Values) > 0 {
		md := e.Metadata
		out.Metadata = &md
	}
	return out
}

func streamGet(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	output := outputFlag(fs)
	return func(ctx context.Context, e *adminEnv) error {
		id, app, err := e.openStream(ctx, *output)
		if err != nil {
			return err
		}
		defer func() { _ = app.Close() }()
		recs, err := app.Recorder().ReadStream(ctx, id, eventstore.StreamQuery{})
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("stream %s: %w", id, eventstore.ErrNotFound)
		}
		events := make([]eventOut, len(recs))
		for i, r := range recs {
			ev, err := app.Store.Mapper().DecodeRaw(r)
			if err != nil {
				return fmt.Errorf("%w (esflow stream verify %s checks the whole stream)", err, id)
			}
			events[i] = toEventOut(ev)
		}
		if *output == "json" {
			return writeJSON(e.out, map[string]any{"stream_id": id, "events": events})
		}
		tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tTYPE\tTIME\tID\tDATA")
		for _, ev := range events {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", ev.Version, ev.Type, ev.Time.Format(time.RFC3339Nano), ev.ID, ev.Data)
		}
		return tw.Flush()
	}
}

func streamVerify(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	output := outputFlag(fs)
	return func(ctx context.Context, e *adminEnv) error {
		id, app, err := e.openStream(ctx, *output)
		if err != nil {
			return err
		}
		defer func() { _ = app.Close() }()
		v, err := app.Store.VerifyStream(ctx, id)
		if err != nil {
			return err
		}
		if *output == "json" {
			res := map[string]any{"stream_id": id, "ok": v.OK, "events": v.Events, "head_hash": v.Head}
			if !v.OK {
				res["error"], res["position"] = v.Problem.Error(), v.Position
			}
			if err := writeJSON(e.out, res); err != nil {
				return err
			}
		} else if v.OK {
			fmt.Fprintf(e.out, "stream %s: ok, %d events, head %s\n", id, v.Events, v.Head)
		}
		if !v.OK {
			return fmt.Errorf("stream %s: %w at version %d of %d: %v (last good head %q)", id, ErrBrokenChain, v.Position, v.Events, v.Problem, v.Head)
		}
		return nil
	}
}

func logTail(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	var (
		from   = fs.Int64("from", 0, "first notification id to print (default: the last -n)")
		n      = fs.Int("n", 10, "without -from: how many of the last notifications to print")
		follow = fs.Bool("f", false, "keep printing new notifications until interrupted")
		poll   = fs.Duration("poll", 200*time.Millisecond, "with -f: how often to look for new notifications")
		output = outputFlag(fs)
	)
	return func(ctx context.Context, e *adminEnv) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *from < 0 || *n < 0 || *poll <= 0 {
			return cli.Usagef("-from, -n and -poll must be positive")
		}
		app, err := e.openStore(ctx, false)
		if err != nil {
			return err
		}
		defer func() { _ = app.Close() }()
		start := uint64(*from)
		if !e.fs.Set("from") {
			last, err := app.Recorder().MaxNotificationID(ctx)
			if err != nil {
				return err
			}
			start = uint64(max(int64(last)-int64(*n)+1, 1))
		}
		start = max(start, 1)
		var tw *tabwriter.Writer
		if *output == "table" {
			tw = tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tSTREAM\tVERSION\tTYPE")
		}
		for {
			ns, err := app.Store.Notifications(ctx, eventstore.NotificationQuery{Start: start, Limit: 500})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			for _, nt := range ns {
				ev, err := app.Store.Mapper().DecodeRaw(nt.Record)
				if err != nil {
					return fmt.Errorf("notification %d: %w", nt.ID, err)
				}
				start = nt.ID + 1
				o := toEventOut(ev)
				o.Notification = nt.ID
				if tw == nil {
					if err := writeJSONLine(e.out, o); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", nt.ID, o.Time.Format(time.RFC3339Nano), o.StreamID, o.Version, o.Type)
			}
			if tw != nil {
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if len(ns) == 500 {
				continue
			}
			if !*follow {
				return nil
			}
			t := time.NewTimer(*poll)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

func projectionStatus(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	output := outputFlag(fs)
	return func(ctx context.Context, e *adminEnv) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		name := e.args[0]
		if err := projector.Known(name); err != nil {
			return err
		}
		if err := mustExist(e.read); err != nil {
			return err
		}
		db, _, closeDB, err := projector.OpenDB(ctx, e.read)
		if err != nil {
			return err
		}
		defer closeDB()
		st, err := projection.ReadStatus(ctx, db, name)
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(e.out, st)
		}
		fmt.Fprintf(e.out, "projection %s: %d aggregates tracked, %d members, %d partitions, %d unresolved gaps, %d dead letters\n",
			name, st.Tracked, len(st.Members), len(st.Partitions), len(st.Gaps), len(st.DeadLetters))
		tw := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
		if len(st.Members) > 0 {
			fmt.Fprintln(tw, "MEMBER\tHOST\tLAST SEEN")
			for _, m := range st.Members {
				fmt.Fprintf(tw, "%d\t%s\t%s ago\n", m.ID, m.Host, m.SeenAgo.Round(time.Millisecond))
			}
		}
		if len(st.Partitions) > 0 {
			fmt.Fprintln(tw, "TOPIC\tPARTITION\tOWNER\tGENERATION\tNEXT OFFSET\tCLUSTER")
			for _, p := range st.Partitions {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\n", p.Topic, p.Partition, p.Owner, p.Generation, p.NextOffset, p.Cluster)
			}
		}
		for _, g := range st.Gaps {
			fmt.Fprintf(tw, "gap\t%s\twaiting for version %d (seen %d)\n", g.AggregateID, g.ExpectedVersion, g.SeenVersion)
		}
		for _, d := range st.DeadLetters {
			fmt.Fprintf(tw, "dead letter\t%s\t%s v%d: %s\n", d.EventID, d.AggregateID, d.Version, d.Error)
		}
		return tw.Flush()
	}
}

func projectionRedrive(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	fromBeginning := fs.Bool("from-beginning", false, "read the whole dead-letter topic, not only what earlier redrives left")
	return func(ctx context.Context, e *adminEnv) error {
		if err := projector.Known(e.args[0]); err != nil {
			return err
		}
		svc, err := e.openProjector(ctx)
		if err != nil {
			return err
		}
		defer svc.Close()
		return svc.RedriveJob(ctx, e.out, e.args[0], projection.RedriveConfig{FromBeginning: *fromBeginning})
	}
}

func projectionRebuild(fs *cli.FlagSet) func(context.Context, *adminEnv) error {
	var (
		from    = fs.String("from", "store", "where the events come from: store (the event store's notification log) or kafka (the topics from their earliest offsets)")
		keepOld = fs.Bool("keep-old", false, "keep the replaced tables as <table>_old")
	)
	return func(ctx context.Context, e *adminEnv) error {
		if err := projector.Known(e.args[0]); err != nil {
			return err
		}
		var source projection.RebuildSource
		switch *from {
		case "kafka":
			source = projection.KafkaSource{}
		case "store":
			app, err := e.openStore(ctx, false)
			if err != nil {
				return err
			}
			defer func() { _ = app.Close() }()
			source = projection.StoreSource{Store: app.Store}
		default:
			return cli.Usagef("-from %q: want store or kafka", *from)
		}
		svc, err := e.openProjector(ctx)
		if err != nil {
			return err
		}
		defer svc.Close()
		return svc.RebuildJob(ctx, e.out, e.args[0], source, *keepOld)
	}
}

func migrate(*cli.FlagSet) func(context.Context, *adminEnv) error {
	return func(ctx context.Context, e *adminEnv) error {
		app, err := e.openStore(ctx, true)
		if err != nil {
			return err
		}
		backend := app.Backend
		if err := app.Close(); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "event store and outbox: %s (%s): schema up to date\n", redact(e.storeURL), backend)
		if err := createFile(e.read); err != nil {
			return err
		}
		svc, err := e.openProjector(ctx)
		if err != nil {
			return err
		}
		svc.Close()
		fmt.Fprintf(e.out, "read models: %s: schema up to date\n", redact(e.read))
		return nil
	}
}

// createFile makes sure a SQLite URL's file exists (projector.OpenDB
// opens files that exist).
func createFile(url string) error {
	if !strings.HasPrefix(strings.ToLower(url), "sqlite:") {
		return nil
	}
	path, inMemory, err := sqlite.ParseDSN(url)
	if err != nil || inMemory {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("read-model database: %w", err)
	}
	return f.Close()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeJSONLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
