package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/esflow/esflow/examples/domain"
	"github.com/esflow/esflow/internal/pgtest"
	"github.com/esflow/esflow/internal/proctest"
	"github.com/esflow/esflow/pkg/aggregate"
	"github.com/esflow/esflow/pkg/application"
	"github.com/esflow/esflow/pkg/broker"
	"github.com/esflow/esflow/pkg/outbox"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestAdminCommands runs the operator's commands as processes against
// SQLite and PostgreSQL: migrate an empty database, read a stream the test
// saved (JSON and table), verify it, tail and follow the notification
// log, rebuild a projection from the store and read its status, redrive
// it against a broker, and then tamper with a stored event: verify exits
// 1 and names the version.
func TestAdminCommands(t *testing.T) {
	bins := proctest.NewBuilds()
	t.Cleanup(bins.Close)
	bin := bins.Path(t, "github.com/esflow/esflow/cmd/esflow")
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			dir := t.TempDir()
			storeURL, readURL := "sqlite://"+filepath.Join(dir, "events.db"), "sqlite://"+filepath.Join(dir, "read.db")
			if backend == "postgres" {
				storeURL = pgtest.NewDatabase(t)
				readURL = storeURL
			}
			env := []string{"DATABASE_URL=" + storeURL, "READ_DATABASE_URL=" + readURL}
			esflow := func(extraEnv []string, args ...string) (string, string, int) {
				t.Helper()
				return runEsflow(ctx, t, bin, dir, append(env, extraEnv...), args...)
			}

			// A store that was never set up is named, not created.
			if backend == "sqlite" {
				if _, errOut, code := esflow(nil, "stream", "verify", "00000000-0000-0000-0000-000000000001"); code != 1 || !strings.Contains(errOut, "esflow migrate") {
					t.Fatalf("verify before migrate: exit %d, %q", code, errOut)
				}
			}
			out, errOut, code := esflow(nil, "migrate")
			if code != 0 || strings.Count(out, "schema up to date") != 2 {
				t.Fatalf("migrate: exit %d, stdout %q, stderr %q", code, out, errOut)
			}

			reg := aggregate.NewRegistry()
			domain.Register(reg)
			app, err := application.New(ctx, application.Config{DatabaseURL: storeURL, Registry: reg, Outbox: &outbox.Builder{}})
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			world, err := domain.NewWorld("gods")
			if err != nil {
				t.Fatal(err)
			}
			must(t, world.MakeItSo("dinosaurs"))
			must(t, world.MakeItSo("trucks"))
			must(t, app.Save(ctx, world))
			id := world.ID().String()

			out, errOut, code = esflow(nil, "stream", "get", id, "-o", "json")
			if code != 0 {
				t.Fatalf("stream get: exit %d, %s", code, errOut)
			}
			var got struct {
				StreamID string `json:"stream_id"`
				Events   []eventOut
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("stream get -o json: %v\n%s", err, out)
			}
			if got.StreamID != id || len(got.Events) != 3 || got.Events[2].Hash != world.Head() ||
				got.Events[1].Type != got.Events[2].Type || !strings.Contains(string(got.Events[1].Data), `"dinosaurs"`) ||
				got.Events[2].PreviousHash != got.Events[1].Hash {
				t.Fatalf("stream get -o json: %s", out)
			}
			out, _, code = esflow(nil, "stream", "get", "-o", "table", id)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 4 ||
				!strings.HasPrefix(lines[0], "VERSION") || !strings.Contains(lines[3], "trucks") {
				t.Fatalf("stream get -o table: exit %d\n%s", code, out)
			}

			out, errOut, code = esflow(nil, "stream", "verify", id)
			if code != 0 || !strings.Contains(out, "ok, 3 events, head "+world.Head()) {
				t.Fatalf("verify: exit %d, stdout %q, stderr %q", code, out, errOut)
			}

			out, _, code = esflow(nil, "log", "tail", "-from", "2", "-o", "json")
			if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 ||
				!strings.Contains(lines[0], `"notification":2`) || !strings.Contains(lines[1], `"notification":3`) {
				t.Fatalf("log tail -from 2: exit %d\n%s", code, out)
			}
			out, _, code = esflow(nil, "log", "tail", "-n", "1")
			if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "3 ") {
				t.Fatalf("log tail -n 1: exit %d\n%s", code, out)
			}

			// -f prints what is saved while it follows, and an interrupt
			// ends it cleanly.
			tail := proctest.Start(t, proctest.Command{Name: "tail", Path: bin, Dir: dir, Env: env,
				Unset: []string{"DB_URI", "KAFKA_*", "CIPHER_KEY", "ESFLOW_*"}, Args: []string{"log", "tail", "-f", "-poll", "20ms"}})
			tail.WaitOutput(t, id, 30*time.Second)
			must(t, world.SetRuler("money"))
			must(t, app.Save(ctx, world))
			tail.WaitOutput(t, "4  ", 30*time.Second)
			must(t, tail.Signal(syscall.SIGINT))
			if err := tail.Wait(t, 30*time.Second); err != nil {
				t.Fatalf("log tail -f after SIGINT: %v\n%s", err, tail.Output())
			}

			out, errOut, code = esflow(nil, "projection", "rebuild", "worlds")
			if code != 0 || !strings.Contains(out, "rebuild worlds: swapped in: 4 events applied") {
				t.Fatalf("rebuild: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			out, errOut, code = esflow(nil, "projection", "status", "worlds")
			if code != 0 || !strings.Contains(out, "projection worlds: 1 aggregates tracked") || !strings.Contains(out, "0 dead letters") {
				t.Fatalf("status: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if _, errOut, code = esflow(nil, "projection", "status", "nope"); code != 1 || !strings.Contains(errOut, "worlds, examples") {
				t.Fatalf("status of an unknown projection: exit %d, %q", code, errOut)
			}
			b, err := broker.Start(ctx, broker.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			out, errOut, code = esflow([]string{"KAFKA_BROKERS=" + b.Addr()}, "projection", "redrive", "worlds")
			if code != 0 || !strings.Contains(out, "redrive worlds: applied 0, skipped 0, still failing 0") {
				t.Fatalf("redrive: exit %d, stdout %q, stderr %q", code, out, errOut)
			}

			// Tamper with the stored "trucks" event (version 2).
			tamper(ctx, t, backend, storeURL)
			out, errOut, code = esflow(nil, "stream", "verify", id)
			if code != 1 || !strings.Contains(errOut, "hash chain broken at version 2 of 4") || strings.Contains(out, "ok") {
				t.Fatalf("verify of a tampered stream: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			out, _, code = esflow(nil, "stream", "verify", id, "-o", "json")
			var v struct {
				OK       bool
				Position int
				HeadHash string `json:"head_hash"`
			}
			if err := json.Unmarshal([]byte(out), &v); code != 1 || err != nil || v.OK || v.Position != 2 || v.HeadHash != got.Events[1].Hash {
				t.Fatalf("verify -o json of a tampered stream: exit %d, %v, %s", code, err, out)
			}
			if _, errOut, code = esflow(nil, "stream", "get", id); code != 1 || !strings.Contains(errOut, "integrity") {
				t.Fatalf("get of a tampered stream: exit %d, %q", code, errOut)
			}
			if _, errOut, code = esflow(nil, "stream", "verify", "00000000-0000-0000-0000-000000000001"); code != 1 || !strings.Contains(errOut, "not found") {
				t.Fatalf("verify of a missing stream: exit %d, %q", code, errOut)
			}
		})
	}
}

// tamper changes the stored payload of the event at version 2 without
// touching its hash.
func tamper(ctx context.Context, t *testing.T, backend, url string) {
	t.Helper()
	if backend == "postgres" {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		tag, err := conn.Exec(ctx, `UPDATE events SET data = convert_to(replace(convert_from(data, 'UTF8'), 'trucks', 'trains'), 'UTF8') WHERE position = 2`)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("tamper: %v %v", tag, err)
		}
		return
	}
	db, err := sql.Open("sqlite", strings.TrimPrefix(url, "sqlite://"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(ctx, `UPDATE events SET data = CAST(replace(CAST(data AS TEXT), 'trucks', 'trains') AS BLOB) WHERE position = 2`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tamper: %d rows", n)
	}
}

// runEsflow runs the binary once with env (and none of the inherited
// configuration) and returns stdout, stderr and the exit status.
func runEsflow(ctx context.Context, t *testing.T, bin, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = proctest.Environ(os.Environ(), env, []string{"DATABASE_URL", "DB_URI", "READ_DATABASE_URL", "KAFKA_*", "CIPHER_KEY", "ESFLOW_*"})
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return o.String(), e.String(), 0
	case errors.As(err, &exit):
		return o.String(), e.String(), exit.ExitCode()
	}
	t.Fatalf("esflow %v: %v", args, err)
	return "", "", 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
