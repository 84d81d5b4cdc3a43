// Package otelsession reports what pgsession does in OpenTelemetry's terms:
// spans for the session store's loads and saves, the session's decision for
// each request as attributes of the request's span, latency histograms,
// and every counter of pgsession's Stats as an instrument.
//
// It is a module of its own, so that a program without OpenTelemetry pulls
// in nothing new through pgsession. It attaches at two points and needs no
// pgsession.Config field:
//
//	store := otelsession.Wrap(pgsession.NewPostgresBackend(db))   // spans, durations, decisions
//	m, err := pgsession.New(pgsession.Config{Backend: store, ...})
//	unregister, err := otelsession.RegisterStats(m)              // the Stats counters
//
// Wrap decorates a backend.Backend: it keeps every optional interface the
// wrapped one has (backend.PrincipalBackend, backend.ExclusiveCleaner, and
// backend.Observer, to which it forwards), so wrapping hides no capability.
// It also implements backend.Observer itself, which is how pgsession tells
// it, once per request, what the load found and what the save did.
//
// # Traces
//
// Every Load is a span "pgsession.load" and every Apply a span
// "pgsession.save", children of the span in the request's context (put one
// there with otelhttp, or any HTTP instrumentation, around the middleware).
// A request's decision (outcome, op, renewal, skipped, frozen, refused,
// carrier) is set as attributes on that request span itself, so that a
// trace search for "pgsession.outcome=ambiguous" finds the HTTP requests,
// with their routes and status codes, and the load and save spans show the
// store's part and its latency. A request whose context carries no span at
// all gets a short span "pgsession.request" for the decision instead.
// Cleanup and the principal-wide operations have spans too
// ("pgsession.delete_expired", "pgsession.delete_by_principal",
// "pgsession.list_by_principal").
//
// Nothing recorded names a key, a token, a session ID, a row's ID (a key's
// hash), a principal or session data: attributes are enumerations, booleans
// and counts, and recorded error messages have every run of 32 or more hex
// digits (the form IDs print in) replaced by "[redacted]".
//
// A store that can report how it sends its statements (the PostgreSQL
// backend's StatementMode) has it as the attribute
// "pgsession.statement_mode" on its load and save spans, read once after
// its first statement succeeded, never probed per request.
//
// # Metrics
//
// See RegisterStats for the counters and Wrap for the histograms;
// docs/observability.md in the repository has the whole table. A
// Prometheus user gets them through the OpenTelemetry Prometheus exporter
// (go.opentelemetry.io/otel/exporters/prometheus) as, for example,
// pgsession_session_loads_total and pgsession_load_duration_seconds.
package otelsession
