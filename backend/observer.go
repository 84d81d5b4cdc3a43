package backend

import "context"

// Observer is implemented by a Backend, or a wrapper around one, that
// wants to see what pgsession decided for each request, for traces and
// metrics (package otelsession's wrapper does): what the load found, the
// action executed, and whether the request was refused or failed. The
// Manager checks for it once, in New, and calls Observe once per request
// (or Manager.Load and Save) whose session it loaded, after the save or
// after a failed load, in the request's context and goroutine. Observe
// must be quick and must not fail; it learns no key, token or session data.
// A wrapper should forward Observe to the Backend it wraps when that one
// implements Observer too.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// Event is what pgsession did for one request.
type Event struct {
	// Found says what the request's key named.
	Found Found
	// Bearer says the key came in an "Authorization: Bearer" header, not
	// a cookie.
	Bearer bool
	// Op is the action executed: OpNone when nothing was written (or the
	// save was refused, failed, or never happened).
	Op Op
	// Renewal is the executed OpRotate's Renewal.
	Renewal bool
	// Skipped says a live session was left unwritten by timeout
	// resolution (pgsession's Stats.SkippedWrites).
	Skipped bool
	// Frozen says FreezeSession was called.
	Frozen bool
	// Refused says the request's change could not be stored (pgsession's
	// ErrStaleKey) and the ErrorHandler answered.
	Refused bool
	// Err is the load's or save's error, if any (Refused's included); a
	// request that ended before its save reports its context's error.
	Err error
}

// Found says what a request's key named when its session was loaded.
type Found uint8

// The outcomes of a load.
const (
	FoundNone      Found = iota // no key that verifies: no query
	FoundLive                   // a live session, by its current key
	FoundUnknown                // a key that names no session (never adopted)
	FoundExpired                // a session past its timeouts: treated as absent
	FoundAmbiguous              // keys of two live sessions, or too many keys: none served
	FoundRenewed                // a key retired by a renewal moments ago: the session served
	FoundRetired                // a key retired by a login or logout moments ago: nothing served
)

// String returns the outcome's name, for attributes and logs.
func (f Found) String() string {
	switch f {
	case FoundNone:
		return "none"
	case FoundLive:
		return "live"
	case FoundUnknown:
		return "unknown"
	case FoundExpired:
		return "expired"
	case FoundAmbiguous:
		return "ambiguous"
	case FoundRenewed:
		return "renewed"
	case FoundRetired:
		return "retired"
	}
	return "invalid"
}
