package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/esflow/esflow/internal/pgtest"
)

func TestMain(m *testing.M) {
	// startKafka re-executes this binary to run the broker.
	if os.Getenv(brokerEnv) == "1" {
		if err := runBroker(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(pgtest.Main(m))
}

// tinyScale is quick mode scaled further down, so that the whole command
// runs in seconds in the test suite.
func tinyScale() scale {
	s := quickScale()
	s.saveWarm, s.saveTime = 10*time.Millisecond, 80*time.Millisecond
	s.saveSettings = []saveSetting{{1, 1}, {1, 4}, {10, 1}}
	s.relayEvents = 200
	s.latRate, s.latTime = 200, 300*time.Millisecond
	s.projEvents, s.projPerAccount = 200, 5
	s.loadSizes, s.loadTime = []int{1, 20}, 10*time.Millisecond
	s.pySaves = map[string]int{"postgres": 10, "sqlite": 20}
	s.pyTx, s.pyTxEvents, s.pyWorkers = 4, 5, 2
	return s
}

// TestEndToEnd runs every workload at tiny sizes against a real PostgreSQL
// and the embedded broker in a child process, and checks that the report
// was produced, parses, and kept the hand-written parts of the file. It
// asserts nothing about speed.
func TestEndToEnd(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.NewDatabase(t))
	t.Setenv("KAFKA_BROKERS", "")
	dir := t.TempDir()
	out := filepath.Join(dir, "BENCHMARKS.md")
	plots := filepath.Join(dir, "docs", "bench")
	handBefore := "# Benchmarks\n\nWritten by hand, kept.\n\n"
	handAfter := "\n## Analysis\n\nAlso by hand.\n"
	old := handBefore + beginMarker + "\nstale figures\n" + endMarker + "\n" + handAfter
	if err := os.WriteFile(out, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}

	o, err := parseOptions([]string{"-quick", "-out", out, "-plots", plots}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.scale = tinyScale()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	if err := bench(ctx, o, io.MultiWriter(&stdout, testWriter{t})); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, handBefore) || !strings.HasSuffix(got, handAfter) {
		t.Errorf("hand-written parts not kept:\n%s", got)
	}
	if strings.Contains(got, "stale figures") || strings.Count(got, beginPrefix) != 1 || strings.Count(got, endMarker) != 1 {
		t.Errorf("generated section not replaced exactly once:\n%s", got)
	}
	for _, w := range workloads {
		if !strings.Contains(got, "### "+strings.ToUpper(w.id)+": ") {
			t.Errorf("no section for %s", w.id)
		}
	}
	for _, want := range []string{"go run ./cmd/esbench -quick -out ", "- Go: go", "- PostgreSQL: ", "- Machine: "} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	checkTables(t, got)

	// Every check of the targets is reported with a verdict.
	verdicts := regexp.MustCompile(`(?m)^\| w[1-6] \| .* \| (PASS|MISS) \|$`).FindAllString(got, -1)
	// w1 settings, w2 and its WAL-mode ratio, w3 in both outbox modes
	// (pgtest's server runs wal_level=logical), w4. The tiny scale has no
	// 100-event setting, which is where w1's WAL-mode target is checked.
	if want := 3 + (2 + 1) + (2 + 2) + 1; len(verdicts) != want {
		t.Errorf("%d target rows, want %d", len(verdicts), want)
	}

	// The linked plots exist and are well-formed SVG.
	links := regexp.MustCompile(`!\[[^\]]*\]\(([^)]+\.svg)\)`).FindAllStringSubmatch(got, -1)
	if len(links) != 2 {
		t.Fatalf("%d plot links, want 2", len(links))
	}
	for _, l := range links {
		svg, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(l[1])))
		if err != nil {
			t.Fatalf("plot %s: %v", l[1], err)
		}
		var root struct {
			XMLName xml.Name
		}
		if err := xml.Unmarshal(svg, &root); err != nil || root.XMLName.Local != "svg" {
			t.Errorf("plot %s is not an SVG document: %v", l[1], err)
		}
	}
	if !strings.Contains(stdout.String(), "esbench: wrote ") {
		t.Errorf("no summary line on stdout")
	}
}

// checkTables checks that every markdown table's rows have as many cells
// as its header.
func checkTables(t *testing.T, md string) {
	t.Helper()
	cols := -1
	tables := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = -1
			continue
		}
		n := strings.Count(line, "|") - 1
		if cols < 0 {
			cols = n
			tables++
			continue
		}
		if n != cols {
			t.Errorf("table row has %d cells, header %d: %s", n, cols, line)
		}
	}
	if tables < 7 {
		t.Errorf("%d tables, want at least 7", tables)
	}
}

// testWriter sends the command's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestMergeReport(t *testing.T) {
	gen := beginMarker + "\nnew\n" + endMarker + "\n"
	for _, tc := range []struct{ name, old, want string }{
		{"empty", "", "# Benchmarks\n\n" + gen},
		{"no markers", "# B\n\nhand\n", "# B\n\nhand\n\n" + gen},
		{"replace", "a\n" + beginPrefix + " -->\nold\n" + endMarker + "\nb\n", "a\n" + gen + "b\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeReport([]byte(tc.old), gen)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	if _, err := mergeReport([]byte(beginMarker+"\nno end\n"), gen); err == nil {
		t.Error("a begin marker without an end marker was accepted")
	}
}
