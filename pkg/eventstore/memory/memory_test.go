package memory_test

import (
	"testing"

	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/eventstoretest"
	"github.com/esflow/esflow/pkg/eventstore/memory"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	eventstoretest.Run(t, func(t *testing.T) eventstore.Recorder { return memory.New() })
}
