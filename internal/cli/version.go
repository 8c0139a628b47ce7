package cli

import (
	"runtime/debug"
	"strings"
)

// Version describes the build: the main module's version, the VCS
// revision and time (with "+dirty" when the tree had changes) and the Go
// version, as debug.ReadBuildInfo reports them. A binary built without
// module information says so.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(no build information)"
	}
	return describe(bi)
}

func describe(bi *debug.BuildInfo) string {
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, when string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	parts := []string{version}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "+dirty"
		}
		r := "revision " + rev
		if when != "" {
			r += " (" + when + ")"
		}
		parts = append(parts, r)
	} else {
		parts = append(parts, "revision unknown")
	}
	parts = append(parts, bi.GoVersion)
	return strings.Join(parts, ", ")
}
