package aggregate

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// Registry maps type names ("topics") to Go types for decoding, and keeps
// the upcasters that bring old stored versions of a type up to date. There
// is no global registry: build one with [NewRegistry], register your
// types, and pass it to the event store.
//
// A Registry is safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	byName map[string]*registration
}

type registration struct {
	name      string
	typ       reflect.Type // struct type; values are decoded into *typ
	upcasters []Upcaster   // upcasters[i] turns version i+1 into i+2
}

// Upcaster rewrites the decoded JSON object of one stored version of a
// type into the next version, in place.
type Upcaster func(data map[string]any) error

// RegisterOption configures a registration.
type RegisterOption func(*registration)

// Named registers the type under name instead of [TypeName]'s.
func Named(name string) RegisterOption { return func(r *registration) { r.name = name } }

// Upcasts declares the type's schema history: fns[0] upgrades version 1
// to 2, fns[1] version 2 to 3, and so on. The type's current version is
// len(fns)+1; stored data of any older version is upgraded on load,
// through every step of the chain.
func Upcasts(fns ...Upcaster) RegisterOption {
	return func(r *registration) { r.upcasters = append(r.upcasters, fns...) }
}

// NewRegistry returns a registry that knows the ready-made events
// [Created], [AttributeChanged] and [Discarded].
func NewRegistry() *Registry {
	r := &Registry{byName: map[string]*registration{}}
	Register[Created](r)
	Register[AttributeChanged](r)
	Register[Discarded](r)
	return r
}

// Register adds type T (an event payload, or an aggregate for snapshots)
// to the registry under [TypeName] of *T, or the name given with [Named].
// Registering the same name for another type panics: that is a
// programming error found at start-up, like a duplicate HTTP route.
func Register[T any](r *Registry, opts ...RegisterOption) {
	if err := r.Add(reflect.TypeFor[T](), opts...); err != nil {
		panic(err)
	}
}

// Add is the non-generic form of [Register]; it returns an error instead
// of panicking.
func (r *Registry) Add(t reflect.Type, opts ...RegisterOption) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	reg := &registration{name: TypeName(reflect.New(t).Interface()), typ: t}
	for _, o := range opts {
		o(reg)
	}
	if reg.name == "" {
		return fmt.Errorf("aggregate: register %s: empty type name", t)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[reg.name]; ok && old.typ != t {
		return fmt.Errorf("aggregate: type name %q already registered for %s", reg.name, old.typ)
	}
	r.byName[reg.name] = reg
	return nil
}

// Lookup reports the registered Go type and current schema version of a
// type name.
func (r *Registry) Lookup(name string) (t reflect.Type, version int, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byName[name]
	if !ok {
		return nil, 0, false
	}
	return reg.typ, len(reg.upcasters) + 1, true
}

// Names returns the registered type names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// CurrentVersion returns the schema version new data of the named type is
// written with (1 when it has no upcasters, 0 when it is unknown).
func (r *Registry) CurrentVersion(name string) int {
	_, v, _ := r.Lookup(name)
	return v
}

// Decode turns stored JSON of the named type, written at schema version
// `version`, into a pointer to the registered Go type, running the
// upcasters from that version to the current one. An unregistered name is
// an error matching [ErrUnknownEventType].
func (r *Registry) Decode(name string, version int, data []byte) (any, error) {
	r.mu.RLock()
	reg, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("decode %q: %w", name, ErrUnknownEventType)
	}
	data, err := reg.upcast(version, data)
	if err != nil {
		return nil, err
	}
	p := reflect.New(reg.typ)
	if err := json.Unmarshal(data, p.Interface()); err != nil {
		return nil, fmt.Errorf("decode %q: %w", name, err)
	}
	return p.Interface(), nil
}

// Upcast brings JSON of the named type from schema version `version` to
// the current one. Data of an unregistered name is returned unchanged.
func (r *Registry) Upcast(name string, version int, data []byte) ([]byte, error) {
	r.mu.RLock()
	reg, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return data, nil
	}
	return reg.upcast(version, data)
}

func (reg *registration) upcast(version int, data []byte) ([]byte, error) {
	current := len(reg.upcasters) + 1
	if version < 1 {
		version = 1
	}
	if version > current {
		return nil, fmt.Errorf("decode %q: stored version %d is newer than the registered version %d", reg.name, version, current)
	}
	if version == current {
		return data, nil
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("decode %q v%d for upcasting: %w", reg.name, version, err)
	}
	if obj == nil {
		obj = map[string]any{}
	}
	for v := version; v < current; v++ {
		if err := reg.upcasters[v-1](obj); err != nil {
			return nil, fmt.Errorf("upcast %q from v%d to v%d: %w", reg.name, v, v+1, err)
		}
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("upcast %q: %w", reg.name, err)
	}
	return out, nil
}
