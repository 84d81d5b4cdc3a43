package pgstore

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/internal/sessiondata"
)

// Load implements backend.Backend: one SELECT by primary key (by its first column
// for a zero sid), and for a key that names no row a second one, for the
// row whose predecessor it is.
func (b *Backend) Load(ctx context.Context, id backend.ID, sid backend.SessionID) (*backend.Record, error) {
	l := &loadedRow{rec: backend.Record{ID: id, SessionID: sid}, byKey: sid == (backend.SessionID{})}
	l.args[0], l.args[1] = l.rec.ID[:], l.rec.SessionID[:]
	query, args := sqlLoad, l.args[:]
	if l.byKey {
		query, args = sqlLoadByKey, l.args[:1]
	}
	if _, err := b.run(ctx, query, args, l.scan); err != nil {
		return nil, err
	}
	if !l.found && !l.byKey {
		l.rec.Predecessor = true
		if _, err := b.run(ctx, sqlLoadPredecessor, args, l.scan); err != nil {
			return nil, err
		}
	}
	if !l.found {
		return nil, backend.ErrNotFound
	}
	if l.err != nil {
		return nil, fmt.Errorf("pgsession: session %s: %w", id, l.err)
	}
	return &l.rec, nil
}

// loadedRow is what Load reads, in one allocation: the record and the
// scan's destinations.
type loadedRow struct {
	rec            backend.Record
	args           [2]any
	data, times    sql.RawBytes // valid until the rows move on: decoded in scan
	idle, absolute sql.NullInt64
	persistent     sql.NullBool
	extra          []byte // sqlLoadByKey's session_id, sqlLoadPredecessor's key_hash
	lifetime       backend.Lifetime
	byKey, found   bool
	err            error // the row's data or times did not decode
}

// pgEpoch is PostgreSQL's epoch for timestamps on the wire, 2000-01-01 UTC,
// in microseconds since the Unix epoch.
const pgEpoch = 946684800 * 1000000

// timesHeader is the start of array_send's form of sqlLoadColumns' array: one
// dimension; the null flag (checked apart); the element type, timestamptz
// (OID 1184); 3 elements; lower bound 1. Each element follows as its
// length (8, or -1 for NULL) and its 8 bytes.
var timesHeader = [...]uint32{0: 1, 2: 1184, 3: 3, 4: 1}

// scan reads the row, if any, and decodes it.
func (l *loadedRow) scan(rows *sql.Rows) error {
	if !rows.Next() {
		return rows.Err()
	}
	dest := [7]any{&l.data, &l.times, &l.idle, &l.absolute, &l.persistent, &l.extra, &l.rec.Renewal}
	n := 5
	switch {
	case l.rec.Predecessor:
		n = 7
	case l.byKey:
		n = 6
	}
	if err := rows.Scan(dest[:n]...); err != nil {
		return err
	}
	l.found = true
	switch {
	case l.rec.Predecessor && copy(l.rec.ID[:], l.extra) != len(l.rec.ID):
		l.err = fmt.Errorf("stored key_hash %x is not %d bytes", l.extra, len(l.rec.ID))
	case l.byKey && copy(l.rec.SessionID[:], l.extra) != len(l.rec.SessionID):
		l.err = fmt.Errorf("stored session_id %x is not %d bytes", l.extra, len(l.rec.SessionID))
	}
	if l.err != nil {
		return nil
	}
	var t [3]time.Time
	if t, l.err = decodeTimes(l.times); l.err != nil {
		return nil
	}
	l.rec.Created, l.rec.Accessed, l.rec.Rotated = t[0], t[1], t[2]
	if l.idle.Valid {
		l.lifetime = backend.Lifetime{IdleTimeout: timeoutMS(l.idle.Int64), AbsoluteTimeout: timeoutMS(l.absolute.Int64),
			Persistent: l.persistent.Bool}
		l.rec.Lifetime = &l.lifetime
	}
	var err error
	if l.rec.Data, err = sessiondata.DecodeValidData(l.data); err != nil { // jsonb: always valid JSON
		l.err = fmt.Errorf("stored data is not a JSON object: %w", err)
	}
	return nil
}

// decodeTimes decodes the array of sqlLoadColumns: created_at, accessed_at
// and rotated_at, the zero time when NULL (never rotated; the other two are
// never NULL).
func decodeTimes(b []byte) (t [3]time.Time, err error) {
	all := b
	bad := func() ([3]time.Time, error) {
		return [3]time.Time{}, fmt.Errorf("unexpected row times %x (the statement and its decoding disagree)", all)
	}
	if len(b) < 4*len(timesHeader) {
		return bad()
	}
	for i, want := range timesHeader {
		if got := binary.BigEndian.Uint32(b[4*i:]); got != want && i != 1 {
			return bad()
		}
	}
	b = b[4*len(timesHeader):]
	for i := range t {
		if len(b) < 4 {
			return bad()
		}
		switch int32(binary.BigEndian.Uint32(b)) {
		case -1:
			if i < 2 {
				return bad()
			}
			b = b[4:]
		case 8:
			if len(b) < 12 {
				return bad()
			}
			t[i], b = time.UnixMicro(pgEpoch+int64(binary.BigEndian.Uint64(b[4:]))).UTC(), b[12:]
		default:
			return bad()
		}
	}
	if len(b) != 0 {
		return bad()
	}
	return t, nil
}

// timeoutMS is a stored timeout in milliseconds as a duration: -1 (none)
// stays -1.
func timeoutMS(ms int64) time.Duration {
	if ms < 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

// Apply implements backend.Backend: one statement per action. An insert or rotation
// repeated after its first attempt committed (its answer lost) succeeds
// without writing again; a rotation that finds its old row gone costs a
// second statement to check for that.
func (b *Backend) Apply(ctx context.Context, a backend.Action) error {
	var (
		n   int64
		err error
	)
	switch a.Op {
	case backend.OpNone:
		return nil
	case backend.OpInsert:
		idle, absolute, persistent := lifetimeArgs(a.Lifetime)
		ua, addr := deviceArgs(a.Device)
		query, args := sqlInsert, []any{a.New[:], jsonObject(a.Patch.Set), timeArg(a.Created), timeArg(a.Accessed), nullString(a.Principal),
			a.SessionID[:], idle, absolute, persistent, timeArg(a.Expires), ua, addr}
		if a.Old != (backend.ID{}) {
			query, args = sqlInsertReplacing, append(args, a.Old[:], a.OldSessionID[:])
		}
		_, err = b.exec(ctx, query, args...)
		n = 1
	case backend.OpUpdate:
		switch {
		case a.Patch.IsEmpty() && a.Lifetime == nil:
			n, err = b.exec(ctx, sqlTouch, a.Old[:], timeArg(a.Accessed), timeArg(a.Expires), a.OldSessionID[:])
		case !a.Patch.Replace && !a.SetPrincipal && a.Lifetime == nil:
			n, err = b.exec(ctx, sqlPatch, a.Old[:], jsonObject(a.Patch.Set), array(a.Patch.Delete), timeArg(a.Accessed), timeArg(a.Expires),
				a.OldSessionID[:])
		default:
			idle, absolute, persistent := lifetimeArgs(a.Lifetime)
			n, err = b.exec(ctx, sqlUpdate, a.Old[:], a.Patch.Replace, jsonObject(a.Patch.Set), array(a.Patch.Delete), timeArg(a.Accessed),
				a.SetPrincipal, nullString(a.Principal), a.Lifetime != nil, idle, absolute, persistent, timeArg(a.Expires), a.OldSessionID[:])
		}
	case backend.OpRotate:
		if !a.Patch.Replace && a.Lifetime == nil && a.Device == nil {
			n, err = b.exec(ctx, sqlRotatePatch, a.Old[:], a.New[:], jsonObject(a.Patch.Set), array(a.Patch.Delete),
				timeArg(a.Created), timeArg(a.Accessed), a.SetPrincipal, nullString(a.Principal), timeArg(a.Expires), a.OldSessionID[:], a.Renewal)
		} else {
			idle, absolute, persistent := lifetimeArgs(a.Lifetime)
			ua, addr := deviceArgs(a.Device)
			n, err = b.exec(ctx, sqlRotate, a.Old[:], a.New[:], a.Patch.Replace, jsonObject(a.Patch.Set), array(a.Patch.Delete),
				timeArg(a.Created), timeArg(a.Accessed), a.SetPrincipal, nullString(a.Principal), a.Lifetime != nil, idle, absolute, persistent,
				timeArg(a.Expires), a.Device != nil, ua, addr, a.OldSessionID[:], a.Renewal)
		}
		if err == nil && n == 0 {
			// The old row is gone: by a concurrent logout or rotation, or
			// by this very rotation, repeated after its answer was lost.
			_, err = b.run(ctx, sqlExists, []any{a.New[:], a.OldSessionID[:]}, func(rows *sql.Rows) error {
				if rows.Next() {
					n = 1
				}
				return rows.Err()
			})
		}
	case backend.OpDelete:
		_, err = b.exec(ctx, sqlDelete, a.Old[:], a.OldSessionID[:])
		n = 1
	default:
		return fmt.Errorf("pgsession: unknown operation %d", a.Op)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		return backend.ErrGone
	}
	return nil
}

// array passes keys as a text[] argument (NULL when empty): a []string
// that render quotes, or that run passes through pq.Array as a parameter.
func array(keys []string) any {
	if len(keys) == 0 {
		return nil // NULL, without a value to box
	}
	return keys
}

// storedLifetime is the lifetime columns of a row.
type storedLifetime struct {
	idle, absolute sql.NullInt64 // milliseconds, -1 for none
	persistent     sql.NullBool
}

// lifetime returns the row's own Lifetime, or nil if it follows Config.
func (l storedLifetime) lifetime() *backend.Lifetime {
	if !l.idle.Valid {
		return nil
	}
	return &backend.Lifetime{IdleTimeout: timeoutMS(l.idle.Int64), AbsoluteTimeout: timeoutMS(l.absolute.Int64), Persistent: l.persistent.Bool}
}

// lifetimeArgs returns l as the lifetime columns' values (NULLs for nil).
func lifetimeArgs(l *backend.Lifetime) (idle, absolute, persistent any) {
	if l == nil {
		return nil, nil, nil
	}
	ms := func(d time.Duration) int64 {
		if d < 0 {
			return -1
		}
		return max(d.Milliseconds(), 1)
	}
	return ms(l.IdleTimeout), ms(l.AbsoluteTimeout), l.Persistent
}

// deviceArgs returns d as the device columns' values (NULLs for nil).
func deviceArgs(d *backend.Device) (userAgent, addr any) {
	if d == nil {
		return nil, nil
	}
	return nullString(d.UserAgent), nullString(d.Addr)
}

func nullSessionID(id backend.SessionID) any {
	if id == (backend.SessionID{}) {
		return nil
	}
	return id[:]
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// timeArg passes t as microseconds since the Unix epoch, for a parameter
// followed by micros in the statement (NULL for the zero time).
func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// jsonObject encodes set as a JSON object text. Its values are valid JSON
// (from json.Marshal, or loaded from the table).
func jsonObject(set map[string]json.RawMessage) string {
	if len(set) == 0 {
		return "{}"
	}
	return string(sessiondata.AppendObject(make([]byte, 0, 64), set))
}
