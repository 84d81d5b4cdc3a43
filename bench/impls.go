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
	// sum returns the total of the stored counters.
	sum func(ctx context.Context) (int, error)
}

// routes builds the four routes from an implementation's session calls.
func routes(get func(r *http.Request) (int, error), set func(r *http.Request, n int) error, login func(r *http.Request) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		n, err := get(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		n, err := get(r)
		if err == nil {
			err = set(r, n+1)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n+1)
	})
	mux.HandleFunc("/anon", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		if err := login(r); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	return mux
}

// sumJSON totals data->>'n' of a table holding pgsession-shaped rows.
func sumJSON(db *sqlx.DB, table string) func(context.Context) (int, error) {
	return func(ctx context.Context) (int, error) {
		var n sql.NullInt64
		err := db.QueryRowContext(ctx, `SELECT sum((data->>'n')::bigint) FROM `+table).Scan(&n)
		return int(n.Int64), err
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
	h := routes(
		func(r *http.Request) (int, error) {
			var n int
			_, err := pgsession.FromContext(r.Context()).Get("n", &n)
			return n, err
		},
		func(r *http.Request, n int) error { return pgsession.FromContext(r.Context()).Set("n", n) },
		func(r *http.Request) error {
			if err := pgsession.FromContext(r.Context()).Set("user", "bench"); err != nil {
				return err
			}
			return pgsession.RotateKey(r.Context())
		})
	return &impl{name: "pgsession", cookieName: pgsession.DefaultCookieName, handler: m.Middleware(h), sum: sumJSON(db, "sessions")}, nil
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
	h := routes(
		func(r *http.Request) (int, error) { return sm.GetInt(r.Context(), "n"), nil },
		func(r *http.Request, n int) error { sm.Put(r.Context(), "n", n); return nil },
		func(r *http.Request) error {
			sm.Put(r.Context(), "user", "bench")
			return sm.RenewToken(r.Context())
		})
	sum := func(ctx context.Context) (int, error) {
		rows, err := db.QueryContext(ctx, `SELECT data FROM sessions`)
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		total := 0
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return 0, err
			}
			_, values, err := (scs.GobCodec{}).Decode(b)
			if err != nil {
				return 0, err
			}
			n, _ := values["n"].(int)
			total += n
		}
		return total, rows.Err()
	}
	return &impl{name: "scs", cookieName: sm.Cookie.Name, handler: sm.LoadAndSave(h), sum: sum}, nil
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
	const cookie = "floor"
	type state struct {
		id   []byte
		data map[string]json.RawMessage
	}
	load := func(r *http.Request) (*state, error) {
		c, err := r.Cookie(cookie)
		if err != nil {
			return nil, nil
		}
		key, err := hex.DecodeString(c.Value)
		if err != nil {
			return nil, nil
		}
		id := sha256.Sum256(key)
		var raw []byte
		switch err := sel.QueryRowContext(r.Context(), id[:]).Scan(&raw); err {
		case nil:
		case sql.ErrNoRows:
			return nil, nil
		default:
			return nil, err
		}
		st := &state{id: id[:]}
		return st, json.Unmarshal(raw, &st.data)
	}
	newKey := func(w http.ResponseWriter) []byte {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		http.SetCookie(w, &http.Cookie{Name: cookie, Value: hex.EncodeToString(key), Path: "/", HttpOnly: true})
		id := sha256.Sum256(key)
		return id[:]
	}
	// counter loads the session and its counter, answering the error itself.
	counter := func(w http.ResponseWriter, r *http.Request) (st *state, n int, ok bool) {
		st, err := load(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return nil, 0, false
		}
		if st != nil {
			_ = json.Unmarshal(st.data["n"], &n)
		}
		return st, n, true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		if _, n, ok := counter(w, r); ok {
			fmt.Fprint(w, n)
		}
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		st, n, ok := counter(w, r)
		if !ok {
			return
		}
		var err error
		if st != nil {
			st.data["n"] = json.RawMessage(strconv.Itoa(n + 1))
			b, _ := json.Marshal(st.data)
			_, err = upd.ExecContext(r.Context(), st.id, string(b))
		} else {
			_, err = ins.ExecContext(r.Context(), newKey(w), `{"n":1}`)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n+1)
	})
	mux.HandleFunc("/anon", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		st, err := load(r)
		if err == nil {
			if st != nil {
				_, err = rot.ExecContext(r.Context(), st.id, newKey(w), `{"user":"bench"}`)
			} else {
				_, err = ins.ExecContext(r.Context(), newKey(w), `{"user":"bench"}`)
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	return &impl{name: "floor", cookieName: cookie, handler: mux, sum: sumJSON(db, "sessions")}, nil
}

// newHello is a bare net/http handler with no session: the ceiling of the
// HTTP stack on this machine.
func newHello(context.Context, *sqlx.DB) (*impl, error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	return &impl{name: "hello", handler: h}, nil
}
