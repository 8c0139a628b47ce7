// Package aggregate is esflow's domain layer: events, aggregates, the type
// registry and in-process publish/subscribe. It imports no infrastructure
// (no database or Kafka client), so a service's domain package depends on
// this package only.
//
// # Events
//
// An [Event] is an envelope around a payload, a plain struct of yours
// (type SomethingHappened struct{ What string }). The envelope carries the
// aggregate id and version (0 for an aggregate's first event), the type
// name, time, [Metadata], and two hashes: the previous event's and its
// own, SHA-256 over canonical bytes ([HashEvent]). The last hash is the
// aggregate's head; it verifies the whole sequence.
//
// [Created], [AttributeChanged] and [Discarded] are ready-made payloads.
//
// # Aggregates
//
// Embed [Root] and write Apply, the one mutate path:
//
//	type World struct {
//		aggregate.Root
//		Ruler   string
//		History []string
//	}
//
//	func (w *World) MakeItSo(what string) error {
//		return aggregate.Trigger(w, &SomethingHappened{What: what})
//	}
//
//	func (w *World) Apply(e aggregate.Event) {
//		switch p := e.Payload.(type) {
//		case *aggregate.Created:
//			p.Decode("ruler", &w.Ruler)
//		case *SomethingHappened:
//			w.History = append(w.History, p.What)
//		}
//	}
//
// [Create] gives an aggregate its id and first event; [Trigger] builds an
// event, applies it and keeps it pending until a repository saves it;
// [SetAttribute] and [Discard] trigger the ready-made events. [Replay]
// rebuilds an aggregate from stored events through the same Apply and
// checks the hash chain, reporting [ErrIntegrity] when it does not join.
// Version() is the number of events applied.
//
// # Bring your own model
//
// No base type is required: a plain struct and a mutator function
// func(entity T, e Event) T work with application.EntityRepository, with
// events published on a [Bus] and stored by a persistence policy.
//
// # Registry
//
// A [Registry] maps type names to Go types; there is no global one. Build
// it with [NewRegistry], add your payloads and aggregates with [Register],
// and declare old schema versions with [Upcasts]: stored events and
// snapshots of an older version are upgraded step by step on load.
package aggregate
