package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// The Go side of a read request, without network or database: the app's
// /read route through each implementation, on a store that answers from
// memory. "-insn" runs these under valgrind --tool=callgrind to count
// instructions per request (see insn.go); by hand:
//
//	go test -run '^$' -bench BenchmarkRead -benchmem
//
// fixed is a Backend that returns the same record for every ID, as a
// database would return one row: the cost of the library alone.
type fixed struct{ rec backend.Record }

func (f *fixed) Load(_ context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	rec := f.rec
	rec.ID, rec.SessionID, rec.Data = id, sid, maps.Clone(f.rec.Data)
	return &rec, nil
}

func (f *fixed) Apply(context.Context, backend.Action) error { return nil }

func (f *fixed) DeleteExpired(context.Context, backend.Cutoffs, int) (int, error) {
	return 0, nil
}

// benchRead serves /read with cookie through h for b.N requests.
func benchRead(b *testing.B, h http.Handler, cookie, want string) {
	benchRoute(b, h, "/read", cookie, want)
}

// benchRoute serves path with cookie through h for b.N requests, each of
// which must answer 200 and, unless want is "", the body want.
func benchRoute(b *testing.B, h http.Handler, path, cookie, want string) {
	// A net/http server gives each request a context of its own, which is
	// cancelled when the request ends, and the driver watches it: so does
	// each request here.
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Cookie", cookie)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(ctx))
		cancel()
		if rec.Code != http.StatusOK || (want != "" && rec.Body.String() != want) {
			b.Fatalf("status %d: %q, want %q", rec.Code, rec.Body, want)
		}
	}
}

// pgsessionRead returns the pgsession app on backend and the cookie of a
// session holding n=1, created through the app.
func pgsessionRead(b *testing.B, backend backend.Backend) (http.Handler, string) {
	m, err := newManager(backend)
	if err != nil {
		b.Fatal(err)
	}
	h := m.Middleware(routes(func(_ http.ResponseWriter, r *http.Request) (counter, error) { return pgsCounter{r}, nil }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/write", nil))
	for _, c := range rec.Result().Cookies() {
		if c.Name == pgsession.DefaultCookieName {
			return h, c.Name + "=" + c.Value
		}
	}
	b.Fatalf("/write set no session cookie: %v", rec.Result().Header)
	return nil, ""
}

func BenchmarkReadPgsessionMemory(b *testing.B) {
	h, cookie := pgsessionRead(b, pgsession.NewMemoryBackend())
	benchRead(b, h, cookie, "1")
}

func BenchmarkReadPgsessionFixed(b *testing.B) {
	now := time.Now()
	h, cookie := pgsessionRead(b, &fixed{backend.Record{Data: map[string]json.RawMessage{"n": json.RawMessage("1")}, Created: now, Accessed: now}})
	benchRead(b, h, cookie, "1")
}

// floorRead returns the floor app answering every SELECT with row.
func floorRead(strict bool, row string) (http.Handler, string) {
	f := &floor{strict: strict, load: func(context.Context, []byte) ([]byte, error) { return []byte(row), nil }}
	return routes(f.open), floorCookie + "=" + hex.EncodeToString(make([]byte, 32))
}

func BenchmarkReadFloorFixed(b *testing.B) {
	h, cookie := floorRead(false, `{"n": 1}`)
	benchRead(b, h, cookie, "1")
}

func BenchmarkReadFloorStrictFixed(b *testing.B) {
	h, cookie := floorRead(true, `{"n": 1}`)
	benchRead(b, h, cookie, `{"n": 1}`)
}

// benchAnon serves /anon without a cookie through h for b.N requests.
func benchAnon(b *testing.B, h http.Handler) {
	req := httptest.NewRequest(http.MethodGet, "/anon", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

func BenchmarkAnonPgsession(b *testing.B) {
	h, _ := pgsessionRead(b, pgsession.NewMemoryBackend())
	benchAnon(b, h)
}

func BenchmarkAnonHello(b *testing.B) {
	im, _ := newHello(context.Background(), env{})
	benchAnon(b, im.handler)
}
