package otelsession

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pgsession/pgsession"
)

// statsInstrument is one counter of pgsession.Stats as an instrument.
type statsInstrument struct {
	name, unit, desc string
	field            string // the Stats field, for the tests
	read             func(pgsession.Stats) uint64
}

// statsInstruments are the Stats counters, in the order of Stats' fields.
// docs/observability.md lists them; a test checks that every field is here.
var statsInstruments = []statsInstrument{
	{"pgsession.session.loads", "{request}", "Requests (and Manager.Load calls) that found a live session.", "Loads",
		func(s pgsession.Stats) uint64 { return s.Loads }},
	{"pgsession.session.misses", "{key}", "Valid session keys whose session was unknown or expired.", "Misses",
		func(s pgsession.Stats) uint64 { return s.Misses }},
	{"pgsession.session.inserts", "{session}", "New sessions stored.", "Inserts",
		func(s pgsession.Stats) uint64 { return s.Inserts }},
	{"pgsession.session.updates", "{session}", "Sessions whose data or access time was written.", "Updates",
		func(s pgsession.Stats) uint64 { return s.Updates }},
	{"pgsession.session.rotations", "{session}", "Stored sessions moved to a new key (a new session's rotation is its insert).", "Rotations",
		func(s pgsession.Stats) uint64 { return s.Rotations }},
	{"pgsession.session.deletes", "{session}", "Sessions deleted: cleared, expired on sight, and removed by cleanup and principal-wide deletes.", "Deletes",
		func(s pgsession.Stats) uint64 { return s.Deletes }},
	{"pgsession.session.skipped_writes", "{request}", "Requests of a live session that wrote nothing (timeout resolution).", "SkippedWrites",
		func(s pgsession.Stats) uint64 { return s.SkippedWrites }},
	{"pgsession.session.lost_races", "{request}", "Saves that found their session deleted or moved by a concurrent logout or rotation.", "LostRaces",
		func(s pgsession.Stats) uint64 { return s.LostRaces }},
	{"pgsession.session.stale_keys", "{request}", "Requests with a key that a concurrent rotation retired moments ago: served after a renewal, given no session after a login or logout.", "StaleKeys",
		func(s pgsession.Stats) uint64 { return s.StaleKeys }},
	{"pgsession.session.errors", "{request}", "Requests answered by the ErrorHandler.", "Errors",
		func(s pgsession.Stats) uint64 { return s.Errors }},
	{"pgsession.session.ambiguous", "{request}", "Requests with keys of two live sessions, or of too many keys, served with none (cookie tossing).", "Ambiguous",
		func(s pgsession.Stats) uint64 { return s.Ambiguous }},
}

// RegisterStats makes every counter of m.Stats() an observable counter of
// the MeterProvider (see WithMeterProvider), all read by one callback at
// each collection: the values are m.Stats() at that moment, exactly. Call
// the returned function to stop reporting them (when m is no longer used).
//
// The instruments are named pgsession.session.loads, .misses, .inserts,
// .updates, .rotations, .deletes, .skipped_writes, .lost_races,
// .stale_keys, .errors and .ambiguous, one per Stats field (see Stats for
// what each counts). Register each Manager once; give several Managers in
// one process distinguishing attributes with WithAttributes.
func RegisterStats(m *pgsession.Manager, opts ...Option) (unregister func() error, err error) {
	c := newConfig(opts)
	meter := c.meterProvider.Meter(ScopeName)
	counters := make([]metric.Int64ObservableCounter, len(statsInstruments))
	observables := make([]metric.Observable, len(statsInstruments))
	for i, si := range statsInstruments {
		counter, err := meter.Int64ObservableCounter(si.name, metric.WithUnit(si.unit), metric.WithDescription(si.desc))
		if err != nil {
			return nil, fmt.Errorf("otelsession: %s: %w", si.name, err)
		}
		counters[i], observables[i] = counter, counter
	}
	set := metric.WithAttributeSet(attribute.NewSet(c.attrs...))
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := m.Stats()
		for i, si := range statsInstruments {
			o.ObserveInt64(counters[i], int64(si.read(s)), set)
		}
		return nil
	}, observables...)
	if err != nil {
		return nil, fmt.Errorf("otelsession: register the Stats callback: %w", err)
	}
	return reg.Unregister, nil
}
