// Package metricnames holds the test that checks every Prometheus metric
// the project registers against the Prometheus naming conventions
// (https://prometheus.io/docs/practices/naming/): the client library's
// linter (promlint: _total on counters and only on them, base units,
// no unit abbreviations, help text, snake case), and the project's own
// rules: an esflow_ prefix, durations and ages in _seconds, sizes in
// _bytes. Dashboards and alerts depend on these names, so a rename is a
// breaking change that the test makes deliberate. It has no code of its
// own.
package metricnames
