package projector

import (
	"context"
	"fmt"
	"io"

	"github.com/esflow/esflow/pkg/projection"
)

// RedriveJob is the operator's redrive: Service.Redrive, with the result
// printed to out. cmd/projector -redrive and esflow projection redrive
// run it.
func (s *Service) RedriveJob(ctx context.Context, out io.Writer, name string, cfg projection.RedriveConfig) error {
	res, err := s.Redrive(ctx, name, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "redrive %s: applied %d, skipped %d, still failing %d\n", name, res.Applied, res.Skipped, res.Failed)
	return nil
}

// RebuildJob is the operator's rebuild: Service.Rebuild from source,
// with its progress and result printed to out. cmd/projector -rebuild and
// esflow projection rebuild run it.
func (s *Service) RebuildJob(ctx context.Context, out io.Writer, name string, source projection.RebuildSource, keepOld bool) error {
	rc := projection.RebuildConfig{
		Source:  source,
		KeepOld: keepOld,
		Progress: func(p projection.RebuildProgress) {
			fmt.Fprintf(out, "rebuild %s: %-8s applied %d, duplicates %d, dead-lettered %d, position %d/%d, %.0f events/s, %s\n",
				p.Projection, p.Phase, p.Applied, p.Duplicates, p.DeadLettered, p.Position, p.Target, p.Rate, p.Elapsed.Round(1e6))
		},
	}
	res, err := s.Rebuild(ctx, name, rc)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "rebuild %s: swapped in: %d events applied (%d duplicates, %d dead-lettered) up to position %d in %s\n",
		res.Projection, res.Applied, res.Duplicates, res.DeadLettered, res.Position, res.Took.Round(1e6))
	return nil
}

// Known returns nil when name is one of the service's projections, else
// an error matching ErrUnknownProjection that names them.
func Known(name string) error {
	for _, p := range All() {
		if p.Name() == name {
			return nil
		}
	}
	names := ""
	for i, p := range All() {
		if i > 0 {
			names += ", "
		}
		names += p.Name()
	}
	return fmt.Errorf("%w %q (have %s)", ErrUnknownProjection, name, names)
}
