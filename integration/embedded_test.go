package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esflow/esflow/examples/readmodel"
	"github.com/esflow/esflow/internal/pgtest"
)

var (
	curlCreate = regexp.MustCompile(`curl -s -X POST (\S+/v1/worlds) -H 'Content-Type: application/json' -d '(\{.*\})'`)
	kcatLine   = regexp.MustCompile(`kcat -b (\S+) -C -t (\S+)`)
)

// The README's first command as a process: the printed curl line creates
// a World whose events reach the Kafka topic (read by a client of our
// own) and the read model; Ctrl-C stops it cleanly; a second run keeps
// the data. On the embedded default and with DATABASE_URL on PostgreSQL.
func TestEmbeddedStackProcess(t *testing.T) {
	bin := build(t, "cmd/esflow")
	for name, env := range map[string][]string{
		"sqlite":   {"DATABASE_URL=", "READ_DATABASE_URL="},
		"postgres": {"DATABASE_URL=" + pgtest.NewDatabase(t), "READ_DATABASE_URL=" + pgtest.NewDatabase(t)},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			dir := t.TempDir()
			env = append(append(os.Environ(), "CIPHER_KEY=", "DB_URI=", "KAFKA_BROKERS=", "WRITER_TOKEN="), env...)

			banner, stop := startStack(t, ctx, bin, dir, env)
			m := curlCreate.FindStringSubmatch(banner)
			k := kcatLine.FindStringSubmatch(banner)
			if m == nil || k == nil {
				t.Fatalf("banner lacks the curl or kcat line:\n%s", banner)
			}
			created := runCurlLine(t, ctx, m[0], m[1], m[2])
			base := strings.TrimSuffix(m[1], "/v1/worlds")

			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{k[1]}, Topic: k[2], GroupID: "integration-watch", StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
			defer func() { _ = r.Close() }()
			for {
				msg, err := r.ReadMessage(ctx)
				if err != nil {
					t.Fatalf("no message for %s on %s: %v", created, k[2], err)
				}
				if string(msg.Key) == created {
					break
				}
			}
			var w readmodel.World
			for getJSON(ctx, base+"/read/worlds/"+created, &w) != http.StatusOK {
				if ctx.Err() != nil {
					t.Fatalf("world %s never reached the read model", created)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if w.Ruler != "gaia" {
				t.Errorf("read model: %+v", w)
			}
			stop()

			banner, stop = startStack(t, ctx, bin, dir, env)
			defer stop()
			m = curlCreate.FindStringSubmatch(banner)
			if m == nil {
				t.Fatalf("second banner lacks the curl line:\n%s", banner)
			}
			base = strings.TrimSuffix(m[1], "/v1/worlds")
			var got struct {
				Ruler   string `json:"ruler"`
				Version uint64 `json:"version"`
			}
			if s := getJSON(ctx, base+"/v1/worlds/"+created, &got); s != http.StatusOK || got.Ruler != "gaia" {
				t.Errorf("second run: GET world: status %d, %+v", s, got)
			}
			if s := getJSON(ctx, base+"/read/worlds/"+created, &w); s != http.StatusOK || w.Ruler != "gaia" {
				t.Errorf("second run: read model: status %d, %+v", s, w)
			}
		})
	}
}

// startStack runs the binary in dir and returns its banner once it
// prints the Kafka line; stop sends SIGINT and waits for a clean exit.
func startStack(t *testing.T, ctx context.Context, bin, dir string, env []string) (string, func()) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "-http-addr", "127.0.0.1:0", "-broker-addr", "127.0.0.1:0")
	cmd.Dir, cmd.Env, cmd.Stderr = dir, env, os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "Ctrl-C") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("esflow after Ctrl-C: %v", err)
		}
	}
	if !strings.Contains(b.String(), "Ctrl-C") {
		stop()
		t.Fatalf("esflow did not print its banner:\n%s", b.String())
	}
	return b.String(), stop
}

// runCurlLine runs the banner's curl line as printed, with curl when
// the machine has it (else the same request from Go), and returns the
// created World's id.
func runCurlLine(t *testing.T, ctx context.Context, line, url, body string) string {
	t.Helper()
	var out []byte
	if _, err := exec.LookPath("curl"); err == nil {
		var err error
		if out, err = exec.CommandContext(ctx, "sh", "-c", line).Output(); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	} else {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if out, err = io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &created); err != nil || created.ID == "" {
		t.Fatalf("%s printed %q, want a JSON object with the new id", line, out)
	}
	return created.ID
}

// getJSON GETs url and decodes a 200 answer into v; it returns the
// status, or 0 when the request failed.
func getJSON(ctx context.Context, url string, v any) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) != nil {
		return 0
	}
	return resp.StatusCode
}
