package otelsession

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of otelsession's tracer and meter.
const ScopeName = "github.com/pgsession/pgsession/otelsession"

// An Option configures Wrap or RegisterStats.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTracerProvider sets the TracerProvider spans are started from. The
// default is the global one (otel.GetTracerProvider) as of the call of Wrap;
// the global provider forwards to one set later with
// otel.SetTracerProvider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tracerProvider = tp
		}
	})
}

// WithMeterProvider sets the MeterProvider instruments are created from. The
// default is the global one (otel.GetMeterProvider) as of the call of Wrap
// or RegisterStats; the global provider forwards to one set later with
// otel.SetMeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.meterProvider = mp
		}
	})
}

// WithAttributes adds attrs to otelsession's own spans (not to the request's
// span, which belongs to its instrumentation), histogram points and counter
// values, for example attribute.String("pgsession.manager", "admin") to tell
// apart the sessions of several Managers in one process. Attributes must
// not vary per request (their values multiply the metric series).
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return optionFunc(func(c *config) { c.attrs = append(c.attrs, attrs...) })
}

type config struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	attrs          []attribute.KeyValue
}

func newConfig(opts []Option) config {
	c := config{tracerProvider: otel.GetTracerProvider(), meterProvider: otel.GetMeterProvider()}
	for _, o := range opts {
		o.apply(&c)
	}
	return c
}

// The attributes otelsession records. Each has a small fixed set of values
// (or is a boolean or a count), so all of them are safe as metric
// dimensions and in trace search.
const (
	// OutcomeKey is what the request's key named (backend.Found's String):
	// none, live, unknown, expired, ambiguous, renewed or retired. On the
	// request's span.
	OutcomeKey = attribute.Key("pgsession.outcome")
	// OpKey is the write: none, insert, update, rotate or delete
	// (backend.Op's String). On the request's span (the write executed) and
	// on pgsession.save spans and the save histogram (the write attempted).
	OpKey = attribute.Key("pgsession.op")
	// RenewalKey says the rotation executed kept who is signed in (a
	// renewal), not a login or logout. On the request's span and
	// pgsession.save spans.
	RenewalKey = attribute.Key("pgsession.renewal")
	// SkippedKey says a live session was left unwritten by timeout
	// resolution. On the request's span.
	SkippedKey = attribute.Key("pgsession.skipped")
	// FrozenKey says the handler froze the session (FreezeSession). On the
	// request's span.
	FrozenKey = attribute.Key("pgsession.frozen")
	// RefusedKey says the request's change could not be stored
	// (pgsession.ErrStaleKey): the ErrorHandler answered, 409 by default.
	// On the request's span.
	RefusedKey = attribute.Key("pgsession.refused")
	// CarrierKey is where the request's session key came from: bearer (an
	// Authorization header) or cookie (a cookie, or none). On the request's
	// span.
	CarrierKey = attribute.Key("pgsession.carrier")
	// StatementModeKey is how the store sends its statements, when it can
	// say (the PostgreSQL backend's StatementMode), for example "driver
	// prepared statements (lib/pq, direct connection)". On load and save
	// spans.
	StatementModeKey = attribute.Key("pgsession.statement_mode")
	// LoadResultKey is what one Load returned: found (the row under the
	// key), predecessor (the row whose key a rotation just replaced),
	// not_found, or error. On pgsession.load spans and the load histogram.
	LoadResultKey = attribute.Key("pgsession.load.result")
	// SaveResultKey is what one Apply returned: ok, gone (the row was
	// deleted or moved by a concurrent logout or rotation: backend.ErrGone,
	// not an error) or error. On pgsession.save spans and the save
	// histogram.
	SaveResultKey = attribute.Key("pgsession.save.result")
	// ErrorTypeKey is OpenTelemetry's error.type: timeout, canceled, or the
	// Go type of the innermost error (such as *pq.Error), else _OTHER. On
	// failed load and save spans and their histogram points.
	ErrorTypeKey = attribute.Key("error.type")
	// DeletedKey is how many sessions a cleanup or principal-wide deletion
	// removed; ListedKey how many sessions ListByPrincipal returned.
	DeletedKey = attribute.Key("pgsession.deleted")
	ListedKey  = attribute.Key("pgsession.listed")
	// ExclusiveKey says a cleanup ran as DeleteExpiredExclusive, and
	// AcquiredKey whether it got the store's cleanup lock (false: another
	// instance was cleaning, nothing was removed).
	ExclusiveKey = attribute.Key("pgsession.cleanup.exclusive")
	AcquiredKey  = attribute.Key("pgsession.cleanup.acquired")
)
