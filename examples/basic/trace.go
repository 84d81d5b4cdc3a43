package main

import (
	"fmt"
	"net/http"
	"os"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/otelsession"
)

// traceStdout implements -trace-stdout. When on, it installs a global
// OpenTelemetry TracerProvider that prints every span to standard output as
// JSON when the span ends, and returns store wrapped by otelsession.Wrap
// (spans "pgsession.load" and "pgsession.save", and the session's decision
// as pgsession.* attributes of the request's span) and a function that
// wraps the app's handler in otelhttp, which starts each request's span.
// When off, it returns store and a function that changes nothing.
//
// A real deployment exports with OTLP instead (package otlptracehttp, say)
// and keeps the rest as it is here.
func traceStdout(on bool, store backend.Backend) (backend.Backend, func(http.Handler) http.Handler) {
	if !on {
		return store, func(h http.Handler) http.Handler { return h }
	}
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout), stdouttrace.WithPrettyPrint())
	if err != nil {
		panic(fmt.Sprintf("stdouttrace: %v", err)) // only for invalid options
	}
	otel.SetTracerProvider(sdktrace.NewTracerProvider(
		// Synchronous: each span is printed as it ends, and nothing waits
		// to be flushed at exit.
		sdktrace.WithSyncer(exporter),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "pgsession-example-basic"))),
	))
	return otelsession.Wrap(store), func(h http.Handler) http.Handler {
		return otelhttp.NewHandler(h, "basic", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path
		}))
	}
}
