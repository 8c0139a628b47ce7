package mysqltest

import (
	"context"
	"errors"
	"testing"
)

// TestNoBinariesIsNotAvailable: without server binaries the error is the
// kind that skips a test, unless CI=true or ESFLOW_REQUIRE_MYSQL=1 make
// it required (and so fail).
func TestNoBinariesIsNotAvailable(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := startLocal(context.Background(), []string{t.TempDir()})
	var na *notAvailableError
	if !errors.As(err, &na) {
		t.Fatalf("startLocal without binaries = %v, want a notAvailableError", err)
	}
	for _, c := range []struct {
		ci, require string
		want        bool
	}{{"", "", false}, {"true", "", true}, {"", "1", true}, {"false", "0", false}} {
		t.Setenv("CI", c.ci)
		t.Setenv("ESFLOW_REQUIRE_MYSQL", c.require)
		if got := required(); got != c.want {
			t.Errorf("CI=%q ESFLOW_REQUIRE_MYSQL=%q: required = %v, want %v", c.ci, c.require, got, c.want)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	cases := []struct{ in, want string }{
		{"mysql://root@127.0.0.1:3306/", "mysql://root@127.0.0.1:3306/db1"},
		{"mysql://u:p@h:1/other?timeout=5s", "mysql://u:p@h:1/db1?timeout=5s"},
	}
	for _, c := range cases {
		if got, err := withDatabase(c.in, "db1"); err != nil || got != c.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := withDatabase("root@tcp(h:3306)/", "db1"); err == nil {
		t.Errorf("driver DSN accepted as admin URL")
	}
}
