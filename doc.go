// Package pgsession provides server-side sessions for net/http, stored in
// PostgreSQL.
//
// A Manager's Middleware wraps any http.Handler. Each request's signed cookie
// (or, with Config.Carrier, its "Authorization: Bearer" token) carries a
// random session key; the session is loaded with one indexed read and handed
// to handlers as a *Session through the request context (FromContext). When
// the response starts, the changes are saved in one statement and the cookie
// is set:
//
//	backend := pgsession.NewPostgresBackend(db) // db is a *sqlx.DB (lib/pq or pgx's stdlib)
//	if err := backend.Migrate(ctx); err != nil { ... }
//	m, err := pgsession.New(pgsession.Config{Backend: backend, HashKeys: [][]byte{secret}})
//	if err != nil { ... }
//	http.ListenAndServe(addr, m.Middleware(mux))
//
// In handlers:
//
//	s := pgsession.FromContext(r.Context())
//	ok, err := s.Get("user_id", &id) // JSON-decodes the stored value
//	err = s.Set("user_id", 42)       // any JSON-encodable value
//	err = pgsession.RotateKey(r.Context())     // on login and logout
//	err = pgsession.FreezeSession(r.Context()) // this request writes nothing
//	ok, err = s.Pop("flash", &msgs)            // read once: a flash message
//
// Outside a handler (WebSocket, gRPC, jobs), Manager.Load puts the session of
// a token into a context and Manager.Save stores it and returns the token to
// hand back. Nested middlewares of several Managers give a request several
// sessions, each with its own cookie (Manager.FromContext).
//
// Sessions end after an idle timeout and an absolute timeout, and an expired
// session is treated exactly as absent. Within the timeout resolution, a
// request that changes nothing writes nothing, so read-mostly traffic costs
// one indexed read per request. Keys come from crypto/rand, the database
// holds only their SHA-256 hashes, a client-chosen key is never adopted, and
// a key that was rotated away or deleted never becomes valid again, even if a
// concurrent request saves with it afterwards.
//
// The whole save policy (timeouts, resolution, rotation, freeze, empty
// sessions) is one pure decision that yields an action; a backend only
// executes actions. NewPostgresBackend (package pgstore, where its
// Migrate, Check, Schema, Distribute, StatementMode, ErrNoTable and
// ReadDeadlineDialer live) and NewMemoryBackend (package memstore, same
// semantics, in process) are the built-in backends. PostgresBackend and
// MemoryBackend are aliases, so go doc finds their methods under those
// packages: go doc github.com/pgsession/pgsession/pgstore Backend. The
// contract a backend implements is package backend, apart from this
// package as database/sql/driver is from database/sql; package
// pgsessiontest holds the conformance suite every backend must pass and
// helpers for testing handlers.
package pgsession
