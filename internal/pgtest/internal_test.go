package pgtest

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWithDatabase(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/db1?sslmode=disable"},
		{"postgresql://h/", "postgresql://h/db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	}
	for _, c := range cases {
		got, err := withDatabase(c.in, "db1")
		if err != nil || got != c.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

// TestDockerDetection checks that probing for a Docker engine neither
// panics nor hangs when the client exists but no engine answers.
func TestDockerDetection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- errors.New("panic")
			}
		}()
		done <- dockerHealthy(ctx)
	}()
	select {
	case err := <-done:
		if err != nil && err.Error() == "panic" {
			t.Fatal("dockerHealthy panicked")
		}
		t.Logf("docker healthy: %v (after %v)", err, time.Since(start))
	case <-time.After(25 * time.Second):
		t.Fatal("dockerHealthy hung")
	}
}
