package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/alexedwards/scs/postgresstore"
	"github.com/alexedwards/scs/redisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/gomodule/redigo/redis"
	"github.com/jmoiron/sqlx"
	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// impl is one implementation of the benchmark app, as its server process
// builds it. Every implementation serves the same routes:
//
//	/read   reads the counter "n" and writes it out, changing nothing
//	/write  increments "n" (creating the session if there is none)
//	/anon   answers without touching the session
//	/login  stores a user and rotates the session key
//	/pad    stores a value of ?bytes= bytes under "pad" (the data-size sweep)
type impl struct {
	handler http.Handler
	// sum returns the total of the stored counters and the number of
	// sessions stored.
	sum func(ctx context.Context) (total, rows int, err error)
	// manager is pgsession's, for the cleanup measurement; nil otherwise.
	manager *pgsession.Manager
}

// env is what an implementation is built on, in its server process.
type env struct {
	db     *sqlx.DB // the pool, direct or through PgBouncer; nil for Redis stores
	table  string   // "schema.sessions": the implementation's own table
	prefix string   // the Redis key prefix of the implementation
}

// counter is one request's view of a session, as each implementation
// provides it.
type counter interface {
	N() (int, error)       // the stored counter, 0 if none
	SetN(n int) error      // store the counter (creating the session if needed)
	Login() error          // store a user and rotate the session key
	SetPad(size int) error // store a value of size bytes
}

// rawReader is a counter whose /read answers the stored bytes untouched.
type rawReader interface{ Raw() []byte }

// routes serves the routes over the counter that open gives for each
// request.
func routes(open func(w http.ResponseWriter, r *http.Request) (counter, error)) http.Handler {
	serve := func(f func(c counter, r *http.Request) (any, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := open(w, r)
			var out any
			if err == nil {
				out, err = f(c, r)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if b, ok := out.([]byte); ok {
				_, _ = w.Write(b)
				return
			}
			fmt.Fprint(w, out)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/read", serve(func(c counter, _ *http.Request) (any, error) {
		if rr, ok := c.(rawReader); ok {
			return rr.Raw(), nil
		}
		return c.N()
	}))
	mux.Handle("/write", serve(func(c counter, _ *http.Request) (any, error) {
		n, err := c.N()
		if err == nil {
			err = c.SetN(n + 1)
		}
		return n + 1, err
	}))
	mux.HandleFunc("/anon", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.Handle("/login", serve(func(c counter, _ *http.Request) (any, error) { return "ok", c.Login() }))
	mux.Handle("/pad", serve(func(c counter, r *http.Request) (any, error) {
		size, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err == nil {
			err = c.SetPad(size)
		}
		n, _ := c.N()
		return n, err
	}))
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

// newPgsession is the library under test, with its default timeouts and
// opts.
func newPgsession(opts ...pgsession.PostgresOption) func(context.Context, env) (*impl, error) {
	return func(ctx context.Context, e env) (*impl, error) {
		b := pgsession.NewPostgresBackend(e.db, append([]pgsession.PostgresOption{pgsession.WithTable(e.table)}, opts...)...)
		if err := b.Migrate(ctx); err != nil {
			return nil, err
		}
		m, err := newManager(b)
		if err != nil {
			return nil, err
		}
		h := routes(func(_ http.ResponseWriter, r *http.Request) (counter, error) { return pgsCounter{r}, nil })
		return &impl{handler: m.Middleware(h), sum: sumJSON(e.db, e.table), manager: m}, nil
	}
}

// benchKey signs every pgsession cookie of a run; the key need not be
// secret on loopback.
var benchKey = []byte("pgsession bench key, 32 bytes...")

func newManager(b backend.Backend) (*pgsession.Manager, error) {
	return pgsession.New(pgsession.Config{Backend: b, HashKeys: [][]byte{benchKey},
		Cookie: pgsession.CookieConfig{Insecure: true}}) // plain HTTP on loopback
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

func (c pgsCounter) SetPad(size int) error {
	return pgsession.FromContext(c.r.Context()).Set("pad", strings.Repeat("x", size))
}

// newSCS is alexedwards/scs v2 with its PostgreSQL store, set up for idle
// expiry as its documentation recommends.
func newSCS(ctx context.Context, e env) (*impl, error) {
	_, err := e.db.ExecContext(ctx, `CREATE TABLE `+e.table+` (token TEXT PRIMARY KEY, data BYTEA NOT NULL, expiry TIMESTAMPTZ NOT NULL);
		CREATE INDEX ON `+e.table+` (expiry)`)
	if err != nil {
		return nil, err
	}
	store := postgresstore.NewWithConfig(e.db.DB, postgresstore.Config{TableName: e.table, CleanUpInterval: 0})
	return scsImpl(store, func(ctx context.Context) (map[string][]byte, error) {
		rows, err := e.db.QueryContext(ctx, `SELECT token, data FROM `+e.table)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		all := map[string][]byte{}
		for rows.Next() {
			var token string
			var b []byte
			if err := rows.Scan(&token, &b); err != nil {
				return nil, err
			}
			all[token] = b
		}
		return all, rows.Err()
	}), nil
}

// newSCSRedis is alexedwards/scs v2 with its Redis store (redigo), keys
// under a prefix of their own.
func newSCSRedis(_ context.Context, e env) (*impl, error) {
	pool := redisPool()
	store := redisstore.NewWithPrefix(pool, e.prefix)
	return scsImpl(store, func(context.Context) (map[string][]byte, error) { return store.All() }), nil
}

// redisAddr is the Redis server of the scs-redis implementation.
var redisAddr = envOr("REDIS_ADDR", "127.0.0.1:6379")

func redisPool() *redis.Pool {
	return &redis.Pool{MaxIdle: 64, IdleTimeout: time.Minute,
		Dial: func() (redis.Conn, error) { return redis.Dial("tcp", redisAddr) }}
}

// dropRedisPrefix deletes the keys under prefix.
func dropRedisPrefix(prefix string) error {
	conn, err := redis.Dial("tcp", redisAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	for cursor := 0; ; {
		vals, err := redis.Values(conn.Do("SCAN", cursor, "MATCH", prefix+"*", "COUNT", 1000))
		if err != nil {
			return err
		}
		cursor, _ = redis.Int(vals[0], nil)
		keys, _ := redis.Strings(vals[1], nil)
		if len(keys) > 0 {
			if _, err := conn.Do("DEL", redis.Args{}.AddFlat(keys)...); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}

// scsImpl is the scs app on store, with all listing the stored sessions.
func scsImpl(store scs.Store, all func(context.Context) (map[string][]byte, error)) *impl {
	sm := scs.New()
	sm.Store = store
	sm.IdleTimeout = 8 * time.Hour
	sm.Lifetime = 30 * 24 * time.Hour
	sm.Cookie.Name = "session"
	h := routes(func(_ http.ResponseWriter, r *http.Request) (counter, error) { return scsCounter{sm, r}, nil })
	sum := func(ctx context.Context) (total, count int, err error) {
		sessions, err := all(ctx)
		if err != nil {
			return 0, 0, err
		}
		for _, b := range sessions {
			_, values, err := (scs.GobCodec{}).Decode(b)
			if err != nil {
				return 0, 0, err
			}
			n, _ := values["n"].(int)
			total += n
			count++
		}
		return total, count, nil
	}
	return &impl{handler: sm.LoadAndSave(h), sum: sum}
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
func (c scsCounter) SetPad(size int) error {
	c.sm.Put(c.r.Context(), "pad", strings.Repeat("x", size))
	return nil
}

// newFloor is no library at all: the least a request can cost to use a
// session stored in PostgreSQL. The cookie is the key in hex, unsigned. A
// read is exactly one indexed SELECT through a prepared statement, whose
// JSON it decodes to answer the counter; a write adds one UPDATE (or an
// INSERT for a new session); a login one DELETE+INSERT. With strict, /read
// answers the stored bytes untouched (no JSON decode): the strict floor.
//
// Without prepared (behind a transaction pooler, where a driver's prepared
// statements are unsafe), each statement is sent unprepared with its
// parameters in the same message (lib/pq binary_parameters=yes, set on the
// pool's DSN): one round trip.
func newFloor(strict, prepared bool) func(context.Context, env) (*impl, error) {
	return func(ctx context.Context, e env) (*impl, error) {
		if _, err := e.db.ExecContext(ctx, `CREATE TABLE `+e.table+` (key_hash bytea PRIMARY KEY, data jsonb NOT NULL,
		created_at timestamptz NOT NULL, accessed_at timestamptz NOT NULL)`); err != nil {
			return nil, err
		}
		f := &floor{strict: strict}
		for _, s := range []struct {
			stmt *floorStmt
			text string
		}{
			{&f.sel, `SELECT data FROM {t} WHERE key_hash = $1`},
			{&f.ins, `INSERT INTO {t} VALUES ($1, $2, now(), now())`},
			{&f.upd, `UPDATE {t} SET data = $2, accessed_at = now() WHERE key_hash = $1`},
			{&f.rot, `WITH old AS (DELETE FROM {t} WHERE key_hash = $1 RETURNING data)
		INSERT INTO {t} SELECT $2, old.data || $3::jsonb, now(), now() FROM old`},
		} {
			s.stmt.db, s.stmt.text = e.db, strings.ReplaceAll(s.text, "{t}", e.table)
			if prepared {
				var err error
				if s.stmt.prep, err = e.db.PrepareContext(ctx, s.stmt.text); err != nil {
					return nil, err
				}
			}
		}
		return &impl{handler: routes(f.open), sum: sumJSON(e.db, e.table)}, nil
	}
}

// floorStmt is one statement of the floor, prepared or not.
type floorStmt struct {
	db   *sqlx.DB
	text string
	prep *sql.Stmt // nil: unprepared
}

func (s *floorStmt) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	if s.prep != nil {
		return s.prep.QueryRowContext(ctx, args...)
	}
	return s.db.QueryRowContext(ctx, s.text, args...)
}

func (s *floorStmt) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	if s.prep != nil {
		return s.prep.ExecContext(ctx, args...)
	}
	return s.db.ExecContext(ctx, s.text, args...)
}

const floorCookie = "floor"

// floor holds the hand-written implementation's prepared statements.
type floor struct {
	sel, ins, upd, rot floorStmt
	strict             bool
	// load, when set, replaces the SELECT (the instruction counts of
	// insn_test.go run the floor on a fixed row).
	load func(ctx context.Context, id []byte) ([]byte, error)
}

// floorCounter is one request's session: the row loaded (nil for none).
type floorCounter struct {
	f    *floor
	w    http.ResponseWriter
	r    *http.Request
	id   []byte
	raw  []byte
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
	if f.load != nil {
		c.raw, err = f.load(r.Context(), id[:])
	} else {
		err = f.sel.QueryRowContext(r.Context(), id[:]).Scan(&c.raw)
	}
	switch err {
	case nil:
	case sql.ErrNoRows:
		return c, nil
	default:
		return nil, err
	}
	c.id = id[:]
	if f.strict && r.URL.Path == "/read" {
		return strictCounter{c}, nil
	}
	return c, json.Unmarshal(c.raw, &c.data)
}

// strictCounter answers /read with the stored bytes untouched.
type strictCounter struct{ *floorCounter }

func (c strictCounter) Raw() []byte { return c.raw }

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

func (c *floorCounter) SetPad(size int) error {
	if c.id == nil {
		return errors.New("no session")
	}
	c.data["pad"], _ = json.Marshal(strings.Repeat("x", size))
	b, _ := json.Marshal(c.data)
	_, err := c.f.upd.ExecContext(c.r.Context(), c.id, string(b))
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

// newHello is the app with no session at all: the same routes, so /anon
// goes through the same ServeMux, without a session middleware. Against
// it, an anonymous request shows what the middleware alone costs.
func newHello(context.Context, env) (*impl, error) {
	return &impl{handler: routes(func(http.ResponseWriter, *http.Request) (counter, error) {
		return nil, errors.New("hello keeps no session")
	})}, nil
}
