package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/esflow/esflow/internal/projector"
	"github.com/esflow/esflow/pkg/projection"
	"github.com/esflow/esflow/pkg/writer"
)

// consoleProjections shows the in-process projector on the writer's
// console: status and lag from each runner, dead letters from the read
// database, and re-drive.
type consoleProjections struct{ svc *projector.Service }

func (c consoleProjections) ProjectionStatus(ctx context.Context) ([]writer.ProjectionStatus, error) {
	ps, runners := c.svc.Projections(), c.svc.Runners()
	out := make([]writer.ProjectionStatus, len(ps))
	for i, p := range ps {
		st := runners[i].Status()
		s := writer.ProjectionStatus{
			Name: p.Name(), Running: st.Running, Ready: st.Ready, Applied: st.Applied, Duplicates: st.Duplicates,
			DeadLettered: st.DeadLettered, LastEventAge: st.LastEventAge.Seconds(),
		}
		for _, q := range st.Partitions {
			s.Partitions = append(s.Partitions, writer.PartitionLag{Topic: q.Topic, Partition: q.Partition,
				Offset: q.Offset, HighWaterMark: q.HighWaterMark, Lag: q.Lag})
		}
		dls, err := runners[i].DeadLetters(ctx, true)
		if err != nil {
			return nil, fmt.Errorf("dead letters of %s: %w", p.Name(), err)
		}
		for _, d := range dls {
			s.DeadLetters = append(s.DeadLetters, writer.DeadLetterStatus{EventID: d.EventID, AggregateID: d.AggregateID,
				Version: d.Version, Error: d.Error, Redriven: d.Redriven})
			s.LastError = d.Error
		}
		out[i] = s
	}
	return out, nil
}

func (c consoleProjections) Redrive(ctx context.Context, name string) (writer.RedriveResult, error) {
	res, err := c.svc.Redrive(ctx, name, projection.RedriveConfig{})
	if errors.Is(err, projector.ErrUnknownProjection) {
		return writer.RedriveResult{}, fmt.Errorf("%w: %w", writer.ErrUnknownProjection, err)
	}
	return writer.RedriveResult{Applied: res.Applied, Skipped: res.Skipped, Failed: res.Failed}, err
}
