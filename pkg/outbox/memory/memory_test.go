package memory_test

import (
	"testing"

	evmemory "github.com/esflow/esflow/pkg/eventstore/memory"
	"github.com/esflow/esflow/pkg/outbox/memory"
	"github.com/esflow/esflow/pkg/outbox/outboxtest"
)

func TestConformance(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) outboxtest.Backend {
		o, err := memory.New(evmemory.New(), memory.Config{})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return o
	})
}

func TestNewNil(t *testing.T) {
	if _, err := memory.New(nil, memory.Config{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}
