package otelsession

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgsession/pgsession/backend"
)

// Wrap returns b with every Load and Apply traced and timed, and each
// request's decision recorded on the request's span (see the package
// documentation). Give the result to pgsession.Config.Backend.
//
// The result implements exactly the optional interfaces b does
// (backend.PrincipalBackend, backend.ExclusiveCleaner), forwarding them with
// a span each, and always backend.Observer, forwarding Observe to b when b
// implements it. Unwrap returns b.
//
// The histograms, in seconds, are "pgsession.load.duration" (one point per
// Load: a request with a key costs one, one per key when it carries
// several, none without a key) with pgsession.load.result, and
// "pgsession.save.duration" (one point per Apply: a request that writes
// nothing costs none) with pgsession.op and pgsession.save.result; both
// carry error.type when the call failed.
func Wrap(b backend.Backend, opts ...Option) backend.Backend {
	c := newConfig(opts)
	w := &wrapper{
		inner:  b,
		tracer: c.tracerProvider.Tracer(ScopeName),
		attrs:  c.attrs,
	}
	w.observer, _ = b.(backend.Observer)
	w.moder, _ = b.(statementModer)
	meter := c.meterProvider.Meter(ScopeName)
	w.loadDur = histogram(meter, "pgsession.load.duration", "Duration of the session store's loads (one per session key a request carries).")
	w.saveDur = histogram(meter, "pgsession.save.duration", "Duration of the session store's writes (one per request that writes).")

	pb, isPB := b.(backend.PrincipalBackend)
	ec, isEC := b.(backend.ExclusiveCleaner)
	switch {
	case isPB && isEC:
		return &principalCleanerWrapper{w, principal{w, pb}, cleaner{w, ec}}
	case isPB:
		return &principalWrapper{w, principal{w, pb}}
	case isEC:
		return &cleanerWrapper{w, cleaner{w, ec}}
	}
	return w
}

// durationBounds are the histograms' bucket boundaries in seconds: a load or
// write takes well under a millisecond in memory and a few on a database.
var durationBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func histogram(meter metric.Meter, name, desc string) metric.Float64Histogram {
	h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	if err != nil {
		otel.Handle(fmt.Errorf("otelsession: %s: %w", name, err))
	}
	return h
}

// statementModer is implemented by the PostgreSQL backend (pgstore.Backend).
type statementModer interface {
	StatementMode(ctx context.Context) (string, error)
}

// wrapper is the decorator of a Backend without optional interfaces; the
// other wrappers embed it.
type wrapper struct {
	inner    backend.Backend
	observer backend.Observer // inner's, if it implements it
	moder    statementModer   // inner's, if it implements it
	tracer   trace.Tracer
	loadDur  metric.Float64Histogram
	saveDur  metric.Float64Histogram
	attrs    []attribute.KeyValue // WithAttributes

	mode      atomic.Pointer[string] // the statement mode, once known
	modeAsked atomic.Bool            // a StatementMode call succeeded or is under way
}

// The combinations of optional interfaces a wrapped Backend can have.
type (
	principalWrapper struct {
		*wrapper
		principal
	}
	cleanerWrapper struct {
		*wrapper
		cleaner
	}
	principalCleanerWrapper struct {
		*wrapper
		principal
		cleaner
	}
)

var (
	_ backend.Observer         = (*wrapper)(nil)
	_ backend.PrincipalBackend = (*principalWrapper)(nil)
	_ backend.ExclusiveCleaner = (*cleanerWrapper)(nil)
	_ backend.PrincipalBackend = (*principalCleanerWrapper)(nil)
	_ backend.ExclusiveCleaner = (*principalCleanerWrapper)(nil)
)

// Unwrap returns the Backend given to Wrap.
func (w *wrapper) Unwrap() backend.Backend { return w.inner }

// start starts a span of the store's, with the statement mode if known.
func (w *wrapper) start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, w.attrs...)
	if m := w.mode.Load(); m != nil {
		attrs = append(attrs, StatementModeKey.String(*m))
	}
	return w.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// learnMode reads the store's statement mode after a statement succeeded
// (so the store has probed its connection already, and answers from what
// it learnt then) and adds it to span if the span did not have it.
func (w *wrapper) learnMode(ctx context.Context, span trace.Span, had bool) {
	if w.moder == nil {
		return
	}
	if w.mode.Load() == nil && w.modeAsked.CompareAndSwap(false, true) {
		if m, err := w.moder.StatementMode(ctx); err == nil && m != "" {
			w.mode.Store(&m)
		} else {
			w.modeAsked.Store(false) // try again after a later statement
		}
	}
	if m := w.mode.Load(); m != nil && !had {
		span.SetAttributes(StatementModeKey.String(*m))
	}
}

// Load loads through the wrapped Backend in a span "pgsession.load".
func (w *wrapper) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	had := w.mode.Load() != nil
	ctx, span := w.start(ctx, "pgsession.load")
	defer span.End()
	t0 := time.Now()
	rec, err := w.inner.Load(ctx, id, sid)
	elapsed := time.Since(t0).Seconds()
	var result string
	switch {
	case err == nil && rec.Predecessor:
		result = "predecessor"
	case err == nil:
		result = "found"
	case errors.Is(err, backend.ErrNotFound):
		result = "not_found"
	default:
		result = "error"
	}
	attrs := []attribute.KeyValue{LoadResultKey.String(result)}
	if result == "error" {
		attrs = append(attrs, ErrorTypeKey.String(errorType(err)))
		recordError(span, err, true)
	} else {
		w.learnMode(ctx, span, had)
	}
	span.SetAttributes(attrs...)
	w.loadDur.Record(ctx, elapsed, metric.WithAttributes(append(attrs, w.attrs...)...))
	return rec, err
}

// Apply executes a through the wrapped Backend in a span "pgsession.save".
func (w *wrapper) Apply(ctx context.Context, a backend.Action) error {
	had := w.mode.Load() != nil
	op := OpKey.String(a.Op.String())
	ctx, span := w.start(ctx, "pgsession.save", op, RenewalKey.Bool(a.Op == backend.OpRotate && a.Renewal))
	defer span.End()
	attrs := []attribute.KeyValue{op}
	t0 := time.Now()
	err := w.inner.Apply(ctx, a)
	elapsed := time.Since(t0).Seconds()
	switch {
	case err == nil:
		attrs = append(attrs, SaveResultKey.String("ok"))
	case errors.Is(err, backend.ErrGone):
		// A lost race with a logout or rotation: pgsession handles it.
		attrs = append(attrs, SaveResultKey.String("gone"))
	default:
		attrs = append(attrs, SaveResultKey.String("error"), ErrorTypeKey.String(errorType(err)))
		recordError(span, err, true)
	}
	if err == nil || errors.Is(err, backend.ErrGone) {
		w.learnMode(ctx, span, had)
	}
	span.SetAttributes(attrs[1:]...)
	w.saveDur.Record(ctx, elapsed, metric.WithAttributes(append(attrs, w.attrs...)...))
	return err
}

// DeleteExpired deletes through the wrapped Backend in a span
// "pgsession.delete_expired".
func (w *wrapper) DeleteExpired(ctx context.Context, c backend.Cutoffs, limit int) (int, error) {
	ctx, span := w.start(ctx, "pgsession.delete_expired", ExclusiveKey.Bool(false))
	defer span.End()
	n, err := w.inner.DeleteExpired(ctx, c, limit)
	span.SetAttributes(DeletedKey.Int(n))
	recordError(span, err, true)
	return n, err
}

// Observe records the request's decision on the span of ctx (the request's
// span), or on a span "pgsession.request" when ctx carries none, and
// forwards e to the wrapped Backend if it observes too.
func (w *wrapper) Observe(ctx context.Context, e backend.Event) {
	attrs := []attribute.KeyValue{
		OutcomeKey.String(e.Found.String()),
		OpKey.String(e.Op.String()),
		RenewalKey.Bool(e.Renewal),
		SkippedKey.Bool(e.Skipped),
		FrozenKey.Bool(e.Frozen),
		RefusedKey.Bool(e.Refused),
		CarrierKey.String(carrier(e.Bearer)),
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		span := trace.SpanFromContext(ctx)
		span.SetAttributes(attrs...)
		// The request's span belongs to its instrumentation, which sets its
		// status (from the HTTP status code): only the error is added.
		recordError(span, e.Err, false)
	} else {
		_, span := w.tracer.Start(ctx, "pgsession.request", trace.WithAttributes(append(attrs, w.attrs...)...))
		recordError(span, e.Err, true)
		span.End()
	}
	if w.observer != nil {
		w.observer.Observe(ctx, e)
	}
}

func carrier(bearer bool) string {
	if bearer {
		return "bearer"
	}
	return "cookie"
}

// principal forwards backend.PrincipalBackend.
type principal struct {
	w  *wrapper
	pb backend.PrincipalBackend
}

// DeleteByPrincipal deletes through the wrapped Backend in a span
// "pgsession.delete_by_principal". The principal is not recorded.
func (p principal) DeleteByPrincipal(ctx context.Context, principal string, only, except backend.SessionID) (int, error) {
	ctx, span := p.w.start(ctx, "pgsession.delete_by_principal")
	defer span.End()
	n, err := p.pb.DeleteByPrincipal(ctx, principal, only, except)
	span.SetAttributes(DeletedKey.Int(n))
	recordError(span, err, true)
	return n, err
}

// ListByPrincipal lists through the wrapped Backend in a span
// "pgsession.list_by_principal". The principal is not recorded.
func (p principal) ListByPrincipal(ctx context.Context, principal string) ([]backend.Record, error) {
	ctx, span := p.w.start(ctx, "pgsession.list_by_principal")
	defer span.End()
	recs, err := p.pb.ListByPrincipal(ctx, principal)
	span.SetAttributes(ListedKey.Int(len(recs)))
	recordError(span, err, true)
	return recs, err
}

// cleaner forwards backend.ExclusiveCleaner.
type cleaner struct {
	w  *wrapper
	ec backend.ExclusiveCleaner
}

// DeleteExpiredExclusive deletes through the wrapped Backend in a span
// "pgsession.delete_expired".
func (c cleaner) DeleteExpiredExclusive(ctx context.Context, cut backend.Cutoffs, limit int) (int, bool, error) {
	ctx, span := c.w.start(ctx, "pgsession.delete_expired", ExclusiveKey.Bool(true))
	defer span.End()
	n, ok, err := c.ec.DeleteExpiredExclusive(ctx, cut, limit)
	span.SetAttributes(DeletedKey.Int(n), AcquiredKey.Bool(ok))
	recordError(span, err, true)
	return n, ok, err
}

// recordError records err, if any, on span as an exception event, and as
// the span's status when the span is otelsession's own.
func recordError(span trace.Span, err error, own bool) {
	if err == nil {
		return
	}
	if msg := err.Error(); hexRun.MatchString(msg) {
		err = &redactedError{msg: hexRun.ReplaceAllString(msg, "[redacted]"), err: err}
	}
	span.RecordError(err)
	if own {
		span.SetStatus(codes.Error, err.Error())
	}
}

// hexRun matches what IDs, session IDs and key hashes print as (32 or 64
// hex digits): error messages that name a row are recorded without it.
var hexRun = regexp.MustCompile(`[0-9a-fA-F]{32,}`)

// redactedError is an error whose message had an ID removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// errorType returns the value of error.type for err: timeout, canceled, or
// the Go type of the innermost error when it says more than a plain message
// would, else _OTHER.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	switch t := fmt.Sprintf("%T", err); t {
	case "*errors.errorString", "*fmt.wrapError", "*fmt.wrapErrors", "*errors.joinError":
		return "_OTHER"
	default:
		return t
	}
}
