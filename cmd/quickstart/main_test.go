package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunTwiceKeepsData(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("DB_URI", "")
	t.Setenv("CIPHER_KEY", "")
	db := filepath.Join(t.TempDir(), "qs.db")
	var first, second bytes.Buffer
	if err := run(context.Background(), []string{"-db", db}, &first); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"-db", db}, &second); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"0 events already stored",
		"retrieved: ruler=money history=[dinosaurs trucks internet] head verified=true",
		"at version 3: ruler=gods history=[dinosaurs trucks]",
		"concurrency error",
		"5 new notifications, ids 1..5",
	} {
		if !strings.Contains(first.String(), want) {
			t.Errorf("first run lacks %q:\n%s", want, first.String())
		}
	}
	if !strings.Contains(second.String(), "5 events already stored") || !strings.Contains(second.String(), "ids 6..10") {
		t.Errorf("second run did not find the first run's events:\n%s", second.String())
	}
}
