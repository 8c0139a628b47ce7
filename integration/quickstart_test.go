package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esflow/esflow/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// build compiles a command of this module into a temporary directory.
func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", bin, "github.com/esflow/esflow/"+pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// The README's first command, as a process: run twice, the second run
// finds the first run's events; on the embedded default and on PostgreSQL.
func TestQuickstartProcess(t *testing.T) {
	bin := build(t, "cmd/quickstart")
	for name, env := range map[string][]string{
		"sqlite":   {"DATABASE_URL="},
		"postgres": {"DATABASE_URL=" + pgtest.NewDatabase(t)},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var outputs []string
			for range 2 {
				cmd := exec.Command(bin, "-db", filepath.Join(dir, "qs.db"))
				cmd.Env = append(append(os.Environ(), "CIPHER_KEY=", "DB_URI="), env...)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("quickstart: %v\n%s", err, out)
				}
				outputs = append(outputs, string(out))
			}
			for _, want := range []string{"head verified=true", "concurrency error", "5 new notifications, ids 1..5"} {
				if !strings.Contains(outputs[0], want) {
					t.Errorf("first run lacks %q:\n%s", want, outputs[0])
				}
			}
			if !strings.Contains(outputs[1], "5 events already stored") || !strings.Contains(outputs[1], "ids 6..10") {
				t.Errorf("second run did not keep the data:\n%s", outputs[1])
			}
		})
	}
}
