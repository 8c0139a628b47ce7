// Package domain is the seed pages' example domain model, written with
// package aggregate: World (a ruler, a history of things that happened)
// and Example (one attribute, foo). It imports nothing but the domain
// layer; the writer and projector services use it as their demo domain.
package domain

import "github.com/esflow/esflow/pkg/aggregate"

// Register adds the domain's event and aggregate types to reg.
func Register(reg *aggregate.Registry) {
	aggregate.Register[SomethingHappened](reg)
	aggregate.Register[World](reg)
	aggregate.Register[Example](reg)
}
