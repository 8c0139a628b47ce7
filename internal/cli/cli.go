// Package cli is the configuration layer every esflow command shares, so
// that they behave alike:
//
//   - every flag -some-name falls back to the environment variable
//     ESFLOW_SOME_NAME when it is not given on the command line (a flag
//     wins over its variable, a variable over the default); a few flags also
//     read an older name ([FlagSet.Alias]); the arguments of one-off
//     operator's commands (esflow stream get -o …) are command-line only
//     ([FlagSet.Local]);
//   - -h and -help print the usage, every flag with its variable and
//     default, and the other variables the command reads, to stdout, and
//     exit 0;
//   - -version prints the module version and VCS revision the binary was
//     built from (debug.ReadBuildInfo) and exits 0;
//   - -log-level (debug, info, warn, error; default info) and -log-format
//     (text or json; default text) are on every command;
//   - an unknown flag, a bad value or an argument the command does not take
//     is a usage error: a clear message on stderr and exit status 2.
//
// A command builds a [FlagSet] from its [Command] description, defines its
// flags, calls [FlagSet.Parse] and hands any error to [Exit].
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"
)

// Defaults shared by every command.
const (
	DefaultLogLevel  = "info"
	DefaultLogFormat = "text"
	// EnvPrefix starts the environment variable of every flag.
	EnvPrefix = "ESFLOW_"
)

// Shared defaults of flags that several commands have: one value wherever
// the flag appears.
const (
	DefaultAutoCreateTopics  = true
	DefaultTopicPartitions   = 8
	DefaultTopicReplication  = 1 // the relay's former default; -1 asks for the broker's default.replication.factor
	DefaultMigrate           = true
	DefaultCloudEventsSource = "esflow"
)

// ErrHelp is returned by Parse after it printed the usage for -h: exit 0.
var ErrHelp = errors.New("cli: help requested")

// ErrVersion is returned by Parse after it printed the version: exit 0.
var ErrVersion = errors.New("cli: version requested")

// ErrUsage is matched by the error of a bad command line or variable.
var ErrUsage = errors.New("usage")

// UsageError is a command line the command cannot run with.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string        { return e.Msg }
func (e *UsageError) Is(target error) bool { return target == ErrUsage }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Var is an environment variable a command reads besides its flags' own.
type Var struct {
	Name  string
	Usage string
}

// Command describes a program for its usage text.
type Command struct {
	// Name is the program's name ("relay"); errors are prefixed with it.
	Name string
	// Synopsis is the usage line after "Usage: " ("relay [flags]").
	// Default Name + " [flags]".
	Synopsis string
	// Summary is a paragraph on what the command does.
	Summary string
	// Env lists the variables read besides the flags' own (DATABASE_URL…).
	Env []Var
	// Args is what the command takes besides its flags, for the usage
	// text (empty: nothing; Parse then refuses any argument). Flags may
	// come before, between and after the arguments.
	Args string
	// NArgs, when positive, is how many arguments the command takes.
	NArgs int
	// Extra is printed at the end of the usage (subcommands, examples).
	Extra string
}

// FlagSet is a command's flags, with their environment fallbacks and the
// flags every command has.
type FlagSet struct {
	cmd    Command
	fs     *flag.FlagSet
	env    map[string][]string // flag name -> variables, first one first
	getenv func(string) string
	stdout io.Writer

	logLevel, logFormat *string
	version             *bool
	args                []string
	local               bool // define flags without a variable
}

// New returns the flag set of cmd. getenv reads the environment
// (os.Getenv when nil); -h and -version print to stdout.
func New(cmd Command, getenv func(string) string, stdout io.Writer) *FlagSet {
	if getenv == nil {
		getenv = os.Getenv
	}
	if cmd.Synopsis == "" {
		cmd.Synopsis = cmd.Name + " [flags]"
		if cmd.Args != "" {
			cmd.Synopsis += " " + cmd.Args
		}
	}
	s := &FlagSet{cmd: cmd, fs: flag.NewFlagSet(cmd.Name, flag.ContinueOnError), env: map[string][]string{},
		getenv: getenv, stdout: stdout}
	s.fs.SetOutput(io.Discard) // Parse reports errors itself
	s.logLevel = s.String("log-level", DefaultLogLevel, "log level: debug, info, warn or error")
	s.logFormat = s.String("log-format", DefaultLogFormat, "log format: text or json")
	s.version = s.fs.Bool("version", false, "print the version and exit")
	return s
}

// EnvName is the variable a flag falls back to: ESFLOW_ and the name in
// upper case with '-' as '_'.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (s *FlagSet) define(name string) {
	if !s.local {
		s.env[name] = []string{EnvName(name)}
	}
}

// Local makes the flags defined after it command-line only: the
// arguments of a one-off operator's command (-o, -from), which no
// deployment's environment should change.
func (s *FlagSet) Local() { s.local = true }

// String defines a string flag.
func (s *FlagSet) String(name, def, usage string) *string {
	s.define(name)
	return s.fs.String(name, def, usage)
}

// Bool defines a boolean flag.
func (s *FlagSet) Bool(name string, def bool, usage string) *bool {
	s.define(name)
	return s.fs.Bool(name, def, usage)
}

// Int defines an int flag.
func (s *FlagSet) Int(name string, def int, usage string) *int {
	s.define(name)
	return s.fs.Int(name, def, usage)
}

// Int64 defines an int64 flag.
func (s *FlagSet) Int64(name string, def int64, usage string) *int64 {
	s.define(name)
	return s.fs.Int64(name, def, usage)
}

// Duration defines a duration flag.
func (s *FlagSet) Duration(name string, def time.Duration, usage string) *time.Duration {
	s.define(name)
	return s.fs.Duration(name, def, usage)
}

// Alias makes flag name also read variable env, after its ESFLOW_ one
// (an older name such as EVENTSTORE_URL).
func (s *FlagSet) Alias(name, env string) { s.env[name] = append(s.env[name], env) }

// Parse parses args, then fills every flag not given from its variable.
// It returns ErrHelp or ErrVersion after printing what was asked for, a
// *UsageError for a bad flag, value or argument, else nil.
func (s *FlagSet) Parse(args []string) error {
	for rest := args; ; {
		if err := s.fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				s.PrintUsage(s.stdout)
				return ErrHelp
			}
			return Usagef("%v (see %s -h)", err, s.cmd.Name)
		}
		if rest = s.fs.Args(); len(rest) == 0 {
			break
		}
		s.args, rest = append(s.args, rest[0]), rest[1:]
	}
	if *s.version {
		fmt.Fprintln(s.stdout, s.cmd.Name, Version())
		return ErrVersion
	}
	given := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, vars := range s.env {
		if given[name] {
			continue
		}
		for _, v := range vars {
			val := s.getenv(v)
			if val == "" {
				continue
			}
			if err := s.fs.Set(name, val); err != nil {
				return Usagef("%s=%q (for -%s): %v", v, val, name, err)
			}
			break
		}
	}
	if _, err := ParseLevel(*s.logLevel); err != nil {
		return err
	}
	if f := *s.logFormat; f != "text" && f != "json" {
		return Usagef("-log-format %q: want text or json", f)
	}
	switch {
	case s.cmd.Args == "" && len(s.args) > 0:
		return Usagef("unexpected argument %q (%s takes flags only; see %s -h)", s.args[0], s.cmd.Name, s.cmd.Name)
	case s.cmd.NArgs > 0 && len(s.args) > s.cmd.NArgs:
		return Usagef("unexpected argument %q (usage: %s)", s.args[s.cmd.NArgs], s.cmd.Synopsis)
	case s.cmd.NArgs > 0 && len(s.args) < s.cmd.NArgs:
		return Usagef("missing argument (usage: %s)", s.cmd.Synopsis)
	}
	return nil
}

// Args returns the arguments besides the flags.
func (s *FlagSet) Args() []string { return s.args }

// Set reports whether flag name was given, on the command line or by its
// variable.
func (s *FlagSet) Set(name string) bool {
	set := false
	s.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// Logger returns a logger writing to w at -log-level in -log-format.
func (s *FlagSet) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: s.LogLevel()}
	if s.LogFormat() == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// LogLevel returns -log-level's level.
func (s *FlagSet) LogLevel() slog.Level {
	level, _ := ParseLevel(*s.logLevel)
	return level
}

// LogFormat returns -log-format: text or json.
func (s *FlagSet) LogFormat() string { return *s.logFormat }

// ParseLevel parses a -log-level value.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, Usagef("-log-level %q: want debug, info, warn or error", s)
}

// PrintUsage writes the usage: synopsis, summary, flags with their
// variables and defaults (in the flag package's layout), the other
// variables, and Extra.
func (s *FlagSet) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n", s.cmd.Synopsis)
	if s.cmd.Summary != "" {
		fmt.Fprintf(w, "%s\n\n", strings.TrimSpace(s.cmd.Summary))
	}
	fmt.Fprintln(w, "Flags (one with a variable in brackets is also read from it when not given on the command line):")
	s.fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if typ != "" {
			fmt.Fprintf(w, "  -%s %s\n", f.Name, typ)
		} else {
			fmt.Fprintf(w, "  -%s\n", f.Name)
		}
		if vars := s.env[f.Name]; len(vars) > 0 {
			usage += " [" + strings.Join(vars, ", ") + "]"
		}
		if !zeroDefault(f) {
			if typ == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		fmt.Fprintf(w, "    \t%s\n", usage)
	})
	if len(s.cmd.Env) > 0 {
		fmt.Fprintln(w, "\nEnvironment:")
		vars := append([]Var(nil), s.cmd.Env...)
		sort.SliceStable(vars, func(i, j int) bool { return vars[i].Name < vars[j].Name })
		width := 0
		for _, v := range vars {
			width = max(width, len(v.Name))
		}
		for _, v := range vars {
			fmt.Fprintf(w, "  %-*s  %s\n", width, v.Name, v.Usage)
		}
	}
	if s.cmd.Extra != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(s.cmd.Extra, "\n"))
	}
}

// zeroDefault reports whether f's default is its type's zero value (the
// flag package then prints no default either).
func zeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s":
		return true
	}
	return false
}

// Exit ends the process for the error a command's run returned: 0 for
// nil, ErrHelp and ErrVersion; 2 with the message for a usage error; 1
// with the message for anything else. Messages go to stderr, prefixed with
// name.
func Exit(name string, err error) {
	os.Exit(ExitCode(os.Stderr, name, err))
}

// ExitCode is Exit without exiting: it writes the message to w and returns
// the status.
func ExitCode(w io.Writer, name string, err error) int {
	switch {
	case err == nil, errors.Is(err, ErrHelp), errors.Is(err, ErrVersion):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(w, "%s: %v\n", name, err)
		return 2
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	return 1
}

// RelayFlags are the flags of every command that runs an outbox relay
// (relay, writer, esflow), with one set of defaults.
type RelayFlags struct {
	AutoCreateTopics  *bool
	TopicPartitions   *int
	TopicReplication  *int
	CloudEvents       *bool
	CloudEventsSource *string
}

// RelayFlags defines the relay's flags.
func (s *FlagSet) RelayFlags() RelayFlags {
	return RelayFlags{
		AutoCreateTopics:  s.Bool("auto-create-topics", DefaultAutoCreateTopics, "create missing topics before publishing to them"),
		TopicPartitions:   s.Int("topic-partitions", DefaultTopicPartitions, "partitions of auto-created topics"),
		TopicReplication:  s.Int("topic-replication", DefaultTopicReplication, "replication factor of auto-created topics (-1: the broker's default)"),
		CloudEvents:       s.Bool("cloudevents", true, "write the CloudEvents Kafka binding's ce_* headers next to the esflow-* ones"),
		CloudEventsSource: s.String("cloudevents-source", DefaultCloudEventsSource, "ce_source of the published events (a URI reference naming this producer)"),
	}
}
