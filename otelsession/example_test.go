package otelsession_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/otelsession"
)

// Wrap the backend, give the result to the Config, and register the
// Manager's Stats. A program passes no provider options: the global
// providers its OpenTelemetry setup installed are the default. Here the
// spans go to an in-memory recorder, to be printed.
func ExampleWrap() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))

	store := otelsession.Wrap(pgsession.NewMemoryBackend(), otelsession.WithTracerProvider(tp))
	m, err := pgsession.New(pgsession.Config{
		Backend:  store,
		HashKeys: [][]byte{bytes.Repeat([]byte{7}, 32)}, // from a secret, in a program
	})
	if err != nil {
		log.Fatal(err)
	}
	unregister, err := otelsession.RegisterStats(m)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = unregister() }()

	app := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			_ = pgsession.FromContext(r.Context()).Set("user", "ada")
			_ = pgsession.RotateKey(r.Context())
		}
	}))
	// otelhttp.NewHandler(app, "server") starts each request's span in a
	// program; here a tracer does.
	server := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tp.Tracer("server").Start(r.Context(), r.Method+" "+r.URL.Path)
		defer span.End()
		app.ServeHTTP(w, r.WithContext(ctx))
	})

	login := httptest.NewRecorder()
	server.ServeHTTP(login, httptest.NewRequest(http.MethodPost, "https://example.com/login", nil))
	read := httptest.NewRequest(http.MethodGet, "https://example.com/", nil)
	read.AddCookie(login.Result().Cookies()[0])
	server.ServeHTTP(httptest.NewRecorder(), read)

	for _, s := range spans.Ended() {
		fmt.Print(s.Name())
		for _, a := range s.Attributes() {
			switch a.Key {
			case otelsession.OutcomeKey, otelsession.OpKey, otelsession.SkippedKey, otelsession.LoadResultKey:
				fmt.Printf(" %s=%s", a.Key, a.Value.String())
			}
		}
		fmt.Println()
	}
	_ = tp.Shutdown(context.Background())
	// Output:
	// pgsession.save pgsession.op=insert
	// POST /login pgsession.outcome=none pgsession.op=insert pgsession.skipped=false
	// pgsession.load pgsession.load.result=found
	// GET / pgsession.outcome=live pgsession.op=none pgsession.skipped=true
}
