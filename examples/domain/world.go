package domain

import "github.com/esflow/esflow/pkg/aggregate"

// World is the quick start's aggregate: a ruler, which is an event-sourced
// attribute, and the history of things that happened.
type World struct {
	aggregate.Root
	Ruler   string   `json:"ruler"`
	History []string `json:"history"`
}

// SomethingHappened is triggered by [World.MakeItSo].
type SomethingHappened struct {
	What string `json:"what"`
}

// NewWorld creates a world ruled by ruler.
func NewWorld(ruler string, opts ...aggregate.Option) (*World, error) {
	w := new(World)
	created := &aggregate.Created{Attributes: map[string]any{"ruler": ruler}}
	if err := aggregate.Create(w, created, opts...); err != nil {
		return nil, err
	}
	return w, nil
}

// MakeItSo records that something happened. The command does no work
// itself: it triggers an event, and Apply appends to the history, now
// and whenever the world is rebuilt from its events.
func (w *World) MakeItSo(something string) error {
	return aggregate.Trigger(w, &SomethingHappened{What: something})
}

// SetRuler assigns the event-sourced attribute ruler.
func (w *World) SetRuler(ruler string) error {
	return aggregate.SetAttribute(w, "ruler", ruler)
}

// Discard ends the world; repositories no longer return it.
func (w *World) Discard() error { return aggregate.Discard(w) }

// Apply is the one mutate path for triggered and replayed events.
func (w *World) Apply(e aggregate.Event) {
	switch p := e.Payload.(type) {
	case *aggregate.Created:
		p.Decode("ruler", &w.Ruler)
	case *aggregate.AttributeChanged:
		p.Decode("ruler", &w.Ruler)
	case *SomethingHappened:
		w.History = append(w.History, p.What)
	}
}
