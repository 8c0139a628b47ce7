// Package todo is a second, deliberately small example domain: a to-do
// list that gains items and ticks them off. Like package examples/domain it
// depends on package aggregate only; package todo/todoapi mounts it on an
// esflow writer through the writer's public API.
package todo

import (
	"errors"
	"fmt"

	"github.com/esflow/esflow/pkg/aggregate"
)

// ErrNoSuchItem reports a Done for an item number the list does not have.
var ErrNoSuchItem = errors.New("todo: no such item")

// Register adds the domain's event and aggregate types to reg.
func Register(reg *aggregate.Registry) {
	aggregate.Register[ItemAdded](reg)
	aggregate.Register[ItemDone](reg)
	aggregate.Register[List](reg)
}

// List is a titled list of items.
type List struct {
	aggregate.Root
	Title string `json:"title"`
	Items []Item `json:"items"`
}

// Item is one entry of a list.
type Item struct {
	Text string `json:"text"`
	Done bool   `json:"done"`
}

// ItemAdded is triggered by [List.Add].
type ItemAdded struct {
	Text string `json:"text"`
}

// ItemDone is triggered by [List.Done]; Item is the item's index.
type ItemDone struct {
	Item int `json:"item"`
}

// NewList creates a list titled title.
func NewList(title string, opts ...aggregate.Option) (*List, error) {
	l := new(List)
	if err := aggregate.Create(l, &aggregate.Created{Attributes: map[string]any{"title": title}}, opts...); err != nil {
		return nil, err
	}
	return l, nil
}

// Add appends an item.
func (l *List) Add(text string) error { return aggregate.Trigger(l, &ItemAdded{Text: text}) }

// Done ticks item i (0-based) off.
func (l *List) Done(i int) error {
	if i < 0 || i >= len(l.Items) {
		return fmt.Errorf("item %d of %d: %w", i, len(l.Items), ErrNoSuchItem)
	}
	return aggregate.Trigger(l, &ItemDone{Item: i})
}

// Apply is the one mutate path.
func (l *List) Apply(e aggregate.Event) {
	switch p := e.Payload.(type) {
	case *aggregate.Created:
		p.Decode("title", &l.Title)
	case *ItemAdded:
		l.Items = append(l.Items, Item{Text: p.Text})
	case *ItemDone:
		l.Items[p.Item].Done = true
	}
}
