package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/alexedwards/scs/postgresstore"
	"github.com/alexedwards/scs/v2"
	"github.com/jmoiron/sqlx"
	"github.com/pgsession/pgsession"
)

// impl is one implementation of the benchmark app. Every implementation
// serves the same routes:
//
//	/read   reads the counter "n" and writes it out, changing nothing
//	/write  increments "n" (creating the session if there is none)
//	/anon   answers without touching the session
//	/login  stores a user and rotates the session key
type impl struct {
	name       string
	cookieName string // "" for hello, which keeps no session
	handler    http.Handler
	// sum returns the total of the stored counters and the number of
	// sessions stored.
	sum func(ctx context.Context) (total, rows int, err error)
}

// counter is one request's view of a session, as each implementation
// provides it.
type counter interface {
	N() (int, error)  // the stored counter, 0 if none
	SetN(n int) error // store the counter (creating the session if needed)
	Login() error     // store a user and rotate the session key
}

// routes serves the four routes over the counter that open gives for each
// request.
func routes(open func(w http.ResponseWriter, r *http.Request) (counter, error)) http.Handler {
	serve := func(f func(c counter) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := open(w, r)
			var out any
			if err == nil {
				out, err = f(c)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprint(w, out)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/read", serve(func(c counter) (any, error) { return c.N() }))
	mux.Handle("/write", serve(func(c counter) (any, error) {
		n, err := c.N()
		if err == nil {
			err = c.SetN(n + 1)
		}
		return n + 1, err
	}))
	mux.HandleFunc("/anon", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.Handle("/login", serve(func(c counter) (any, error) { return "ok", c.Login() }))
	return mux
}

// sumJSON totals data->>'n' of a table holding pgsession-shaped rows, and
// counts them.
func sumJSON(db *sqlx.DB, table string) func(context.Context) (int, int, error) {
	return func(ctx context.Context) (int, int, error) {
		var n sql.NullInt64
		var rows int
		err := db.QueryRowContext(ctx, `SELECT sum((data->>'n')::bigint), count(*) FROM `+table).Scan(&n, &rows)
		return int(n.Int64), rows, err
	}
}

// newPgsession is the library under test, with its default timeouts.
func newPgsession(ctx context.Context, db *sqlx.DB) (*impl, error) {
	b := pgsession.NewPostgresBackend(db) // table "sessions" on the pool's search_path
	if err := b.Migrate(ctx); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	m, err := pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{key},
		Cookie: pgsession.CookieConfig{Insecure: true}}) // plain HTTP on loopback
	if err != nil {
		return nil, err
	}
	h := routes(func(_ http.ResponseWriter, r *http.Request) (counter, error) { return pgsCounter{r}, nil })
	return &impl{name: "pgsession", cookieName: m.CookieName(), handler: m.Middleware(h), sum: sumJSON(db, "sessions")}, nil
}

// pgsCounter is a request's pgsession session.
type pgsCounter struct{ r *http.Request }

func (c pgsCounter) N() (n int, err error) {
	_, err = pgsession.FromContext(c.r.Context()).Get("n", &n)
	return n, err
}

func (c pgsCounter) SetN(n int) error { return pgsession.FromContext(c.r.Context()).Set("n", n) }

func (c pgsCounter) Login() error {
	if err := pgsession.FromContext(c.r.Context()).Set("user", "bench"); err != nil {
		return err
	}
	return pgsession.RotateKey(c.r.Context())
}

// newSCS is alexedwards/scs v2 with its PostgreSQL store, set up for idle
// expiry as its documentation recommends.
func newSCS(ctx context.Context, db *sqlx.DB) (*impl, error) {
	_, err := db.ExecContext(ctx, `CREATE TABLE sessions (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL);
		CREATE INDEX sessions_expiry_idx ON sessions (expiry)`)
	if err != nil {
		return nil, err
	}
	sm := scs.New()
	sm.Store = postgresstore.NewWithCleanupInterval(db.DB, 0)
	sm.IdleTimeout = 8 * time.Hour
	sm.Lifetime = 30 * 24 * time.Hour
	h := routes(func(_ http.ResponseWriter, r *http.Request) (counter, error) { return scsCounter{sm, r}, nil })
	sum := func(ctx context.Context) (total, count int, err error) {
		rows, err := db.QueryContext(ctx, `SELECT data FROM sessions`)
		if err != nil {
			return 0, 0, err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return 0, 0, err
			}
			_, values, err := (scs.GobCodec{}).Decode(b)
			if err != nil {
				return 0, 0, err
			}
			n, _ := values["n"].(int)
			total += n
			count++
		}
		return total, count, rows.Err()
	}
	return &impl{name: "scs", cookieName: sm.Cookie.Name, handler: sm.LoadAndSave(h), sum: sum}, nil
}

// scsCounter is a request's scs session.
type scsCounter struct {
	sm *scs.SessionManager
	r  *http.Request
}

func (c scsCounter) N() (int, error)  { return c.sm.GetInt(c.r.Context(), "n"), nil }
func (c scsCounter) SetN(n int) error { c.sm.Put(c.r.Context(), "n", n); return nil }
func (c scsCounter) Login() error {
	c.sm.Put(c.r.Context(), "user", "bench")
	return c.sm.RenewToken(c.r.Context())
}

// newFloor is no library at all: the least a request can cost to use a
// session stored in PostgreSQL. The cookie is the key in hex, unsigned. A
// read is exactly one indexed SELECT through a prepared statement; a write
// adds one UPDATE (or an INSERT for a new session); a login one DELETE+INSERT.
func newFloor(ctx context.Context, db *sqlx.DB) (*impl, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE sessions (key_hash bytea PRIMARY KEY, data jsonb NOT NULL,
		created_at timestamptz NOT NULL, accessed_at timestamptz NOT NULL)`); err != nil {
		return nil, err
	}
	prep := func(q string) (*sql.Stmt, error) { return db.PrepareContext(ctx, q) }
	sel, err := prep(`SELECT data FROM sessions WHERE key_hash = $1`)
	if err != nil {
		return nil, err
	}
	ins, err := prep(`INSERT INTO sessions VALUES ($1, $2, now(), now())`)
	if err != nil {
		return nil, err
	}
	upd, err := prep(`UPDATE sessions SET data = $2, accessed_at = now() WHERE key_hash = $1`)
	if err != nil {
		return nil, err
	}
	rot, err := prep(`WITH old AS (DELETE FROM sessions WHERE key_hash = $1 RETURNING data)
		INSERT INTO sessions SELECT $2, old.data || $3::jsonb, now(), now() FROM old`)
	if err != nil {
		return nil, err
	}
	f := &floor{sel: sel, ins: ins, upd: upd, rot: rot}
	h := routes(f.open)
	return &impl{name: "floor", cookieName: floorCookie, handler: h, sum: sumJSON(db, "sessions")}, nil
}

const floorCookie = "floor"

// floor holds the hand-written implementation's prepared statements.
type floor struct{ sel, ins, upd, rot *sql.Stmt }

// floorCounter is one request's session: the row loaded (nil for none).
type floorCounter struct {
	f    *floor
	w    http.ResponseWriter
	r    *http.Request
	id   []byte
	data map[string]json.RawMessage
}

// open loads the session named by the cookie (the key in hex): one SELECT.
func (f *floor) open(w http.ResponseWriter, r *http.Request) (counter, error) {
	c := &floorCounter{f: f, w: w, r: r}
	ck, err := r.Cookie(floorCookie)
	if err != nil {
		return c, nil
	}
	key, err := hex.DecodeString(ck.Value)
	if err != nil {
		return c, nil
	}
	id := sha256.Sum256(key)
	var raw []byte
	switch err := f.sel.QueryRowContext(r.Context(), id[:]).Scan(&raw); err {
	case nil:
	case sql.ErrNoRows:
		return c, nil
	default:
		return nil, err
	}
	c.id = id[:]
	return c, json.Unmarshal(raw, &c.data)
}

func (c *floorCounter) N() (n int, err error) {
	if c.id != nil {
		_ = json.Unmarshal(c.data["n"], &n)
	}
	return n, nil
}

func (c *floorCounter) SetN(n int) error {
	var err error
	if c.id != nil {
		c.data["n"] = json.RawMessage(strconv.Itoa(n))
		b, _ := json.Marshal(c.data)
		_, err = c.f.upd.ExecContext(c.r.Context(), c.id, string(b))
	} else {
		_, err = c.f.ins.ExecContext(c.r.Context(), c.newKey(), fmt.Sprintf(`{"n":%d}`, n))
	}
	return err
}

func (c *floorCounter) Login() error {
	var err error
	if c.id != nil {
		_, err = c.f.rot.ExecContext(c.r.Context(), c.id, c.newKey(), `{"user":"bench"}`)
	} else {
		_, err = c.f.ins.ExecContext(c.r.Context(), c.newKey(), `{"user":"bench"}`)
	}
	return err
}

// newKey sets a cookie with a fresh key and returns the key's hash.
func (c *floorCounter) newKey() []byte {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	http.SetCookie(c.w, &http.Cookie{Name: floorCookie, Value: hex.EncodeToString(key), Path: "/", HttpOnly: true})
	id := sha256.Sum256(key)
	return id[:]
}

// newHello is a bare net/http handler with no session: the ceiling of the
// HTTP stack on this machine.
func newHello(context.Context, *sqlx.DB) (*impl, error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	return &impl{name: "hello", handler: h}, nil
}
