package domain

import "github.com/esflow/esflow/pkg/aggregate"

// Example is the seed pages' library example entity: one attribute, foo.
type Example struct {
	aggregate.Root
	Foo string `json:"foo"`
}

// NewExample creates an Example (the seeds' create_new_example).
func NewExample(foo string, opts ...aggregate.Option) (*Example, error) {
	x := new(Example)
	if err := aggregate.Create(x, &aggregate.Created{Attributes: map[string]any{"foo": foo}}, opts...); err != nil {
		return nil, err
	}
	return x, nil
}

// SetFoo assigns foo.
func (x *Example) SetFoo(foo string) error { return aggregate.SetAttribute(x, "foo", foo) }

// Discard ends the example.
func (x *Example) Discard() error { return aggregate.Discard(x) }

// Apply is the one mutate path.
func (x *Example) Apply(e aggregate.Event) {
	switch p := e.Payload.(type) {
	case *aggregate.Created:
		p.Decode("foo", &x.Foo)
	case *aggregate.AttributeChanged:
		p.Decode("foo", &x.Foo)
	}
}
