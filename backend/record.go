package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// ID identifies a stored session: the SHA-256 hash of the session key that
// the client holds. Backends only ever see IDs; the key itself is never stored,
// so a leaked table cannot be replayed as cookies.
type ID [sha256.Size]byte

// String returns the ID in hexadecimal, for logs and debugging.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// SessionID names a session for its whole life: unlike its key (and the
// key's hash, ID), it stays the same when the key rotates, so a device list
// can show it and pgsession's Manager.DeleteSession can take it while the
// session keeps being used. It is not a secret and cannot load or act as
// the session.
type SessionID [16]byte

// String returns the session ID in hexadecimal (32 characters).
func (id SessionID) String() string { return hex.EncodeToString(id[:]) }

// Record is a stored session as a Backend returns it from Load (every field)
// and ListByPrincipal (every field but Data).
type Record struct {
	ID        ID                         // the row's current ID (the hash of its key): the one Load was given, unless Predecessor
	SessionID SessionID                  // the session's lasting name (see SessionID)
	Data      map[string]json.RawMessage // top-level keys and their JSON values
	Created   time.Time                  // when the session (or its current key) was created
	Accessed  time.Time                  // the last access that was written
	// Lifetime is the session's own lifetime (see pgsession.SetLifetime),
	// resolved: each timeout positive, or negative for none. Nil: the
	// Config's apply.
	Lifetime *Lifetime
	Device   Device // the client that created or last rotated it, if recorded (ListByPrincipal only)

	// Rotated is when the row's current key replaced its predecessor (the
	// Accessed of the OpRotate that did it), or zero if it never did.
	Rotated time.Time
	// Predecessor reports that Load found the row by its immediate
	// predecessor: the ID Load was given is the one the rotation at Rotated
	// retired, and ID is the row's current one. No older key finds a row.
	// pgsession decides what such a request may do (see its
	// Config.RotationGrace); a backend only reports it.
	Predecessor bool
	// Renewal is the Action.Renewal of the rotation at Rotated: whether
	// it kept who is signed in. Load reports it with Predecessor.
	Renewal bool
}

// Lifetime is a session's own expiry, chosen per session with
// pgsession.SetLifetime: "remember me" at login, a shorter lifetime for an
// administrator, a longer one for a mobile app's token. It is stored with
// the session, so the server enforces it, and a key rotation keeps it.
type Lifetime struct {
	// IdleTimeout ends the session this long after its last access. Zero
	// means Config.IdleTimeout; negative, no idle timeout.
	IdleTimeout time.Duration
	// AbsoluteTimeout ends the session this long after it was created (or
	// its key last rotated). Zero means Config.AbsoluteTimeout; negative,
	// none.
	AbsoluteTimeout time.Duration
	// Persistent gives the cookie Expires and Max-Age, so it survives a
	// browser restart ("remember me"), even with CookieConfig.SessionOnly;
	// false makes it a browser-session cookie. The server's timeouts apply
	// either way.
	Persistent bool
}

// Device describes the client of a session, as pgsession's Config.Device
// reported it when the session was created or its key last rotated, so
// that a user can recognise their sessions on a "your devices" page. It is
// personal data: record it only to show it, and say so in your privacy
// notice.
type Device struct {
	// UserAgent is the client's User-Agent header.
	UserAgent string
	// Addr is the client's address as the application determines it: only
	// the application knows which proxies in front of it to trust.
	Addr string
}
