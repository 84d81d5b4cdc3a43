package pgsessiontest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

// countingBackend wraps a Backend, counting calls and injecting failures.
type countingBackend struct {
	backend.Backend
	loads     atomic.Int64
	applies   atomic.Int64
	failLoad  atomic.Bool
	failApply atomic.Bool
}

var errInjected = errors.New("pgsessiontest: injected backend failure")

// Load counts the call and fails it while failLoad is set.
func (b *countingBackend) Load(ctx context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	b.loads.Add(1)
	if b.failLoad.Load() {
		return nil, errInjected
	}
	return b.Backend.Load(ctx, id, sid)
}

// Apply counts the call and fails it while failApply is set.
func (b *countingBackend) Apply(ctx context.Context, a backend.Action) error {
	b.applies.Add(1)
	if b.failApply.Load() {
		return errInjected
	}
	return b.Backend.Apply(ctx, a)
}

// DeleteByPrincipal forwards to the wrapped backend, if it has principals.
func (b *countingBackend) DeleteByPrincipal(ctx context.Context, p string, only, except pgsession.SessionID) (int, error) {
	if pb, ok := b.Backend.(backend.PrincipalBackend); ok {
		return pb.DeleteByPrincipal(ctx, p, only, except)
	}
	return 0, pgsession.ErrNoPrincipal
}

// ListByPrincipal forwards to the wrapped backend, if it has principals.
func (b *countingBackend) ListByPrincipal(ctx context.Context, p string) ([]backend.Record, error) {
	if pb, ok := b.Backend.(backend.PrincipalBackend); ok {
		return pb.ListByPrincipal(ctx, p)
	}
	return nil, pgsession.ErrNoPrincipal
}

// harness serves a scriptable handler through a Manager over real HTTP.
type harness struct {
	*Env
	t       *testing.T
	clock   *Clock
	backend *countingBackend
	m       *pgsession.Manager
	srv     *httptest.Server
	outer   *Env // a second Manager whose middleware wraps m's, or nil (see newNestedHarness)

	mu    sync.Mutex
	gates map[string]*gate
}

// gate lets a test hold a request inside its handler: arrived is closed when
// the handler reaches it, and the handler goes on once open is called.
// Every gate is opened when the test ends, so a test that fails while a
// request is held cannot hang the server's Close.
type gate struct {
	arrived, release chan struct{}
	once             sync.Once
}

// open lets the held handler go on. It may be called more than once.
func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// reached waits until a handler arrives at g, failing t after 10 seconds.
func (g *gate) reached(t *testing.T, name string) {
	t.Helper()
	select {
	case <-g.arrived:
	case <-time.After(10 * time.Second):
		t.Fatalf("no request reached the gate %q", name)
	}
}

// newHarness serves the script handler with backend b; mod adjusts the
// Config before New.
func newHarness(t *testing.T, b backend.Backend, mod func(*pgsession.Config)) *harness {
	t.Helper()
	return newNestedHarness(t, b, mod, nil)
}

// newNestedHarness is newHarness with, when outerMod is not nil, the
// middleware of a second Manager around the first: it shares the backend
// and the clock, and its cookie is named "__Host-outer" unless outerMod
// says otherwise. Script ops prefixed "outer/" act on its session.
func newNestedHarness(t *testing.T, b backend.Backend, mod, outerMod func(*pgsession.Config)) *harness {
	t.Helper()
	h := &harness{t: t, backend: &countingBackend{Backend: b}, gates: map[string]*gate{}}
	cfg := pgsession.Config{Backend: h.backend}
	if mod != nil {
		mod(&cfg)
	}
	h.Env = NewEnv(t, cfg)
	h.clock, h.m = h.Env.Clock, h.Env.Manager
	handler := h.m.Middleware(http.HandlerFunc(h.script))
	if outerMod != nil {
		cfg := pgsession.Config{Backend: h.backend, Now: h.clock.Now, Cookie: pgsession.CookieConfig{Name: "__Host-outer"}}
		outerMod(&cfg)
		h.outer = NewEnv(t, cfg)
		handler = h.outer.Manager.Middleware(handler)
	}
	h.srv = httptest.NewServer(handler)
	t.Cleanup(h.srv.Close)
	// Registered after Close, so it runs before: held handlers go on.
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, g := range h.gates {
			g.open()
		}
	})
	return h
}

// parallelHarness returns a constructor of harnesses on fresh backends for
// subtests that run in parallel.
func parallelHarness(newBackend func(t *testing.T) backend.Backend) func(*testing.T, func(*pgsession.Config)) *harness {
	return func(t *testing.T, mod func(*pgsession.Config)) *harness {
		t.Parallel()
		return newHarness(t, newBackend(t), mod)
	}
}

func (h *harness) gate(name string) *gate {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.gates[name]
	if !ok {
		g = &gate{arrived: make(chan struct{}), release: make(chan struct{})}
		h.gates[name] = g
	}
	return g
}

// hold starts a request with cookie header cookie that stops inside the
// handler, after the session was loaded and before ops run. It returns once
// the request is held; calling the returned function lets it finish and
// returns its response.
func (h *harness) hold(cookie, name string, ops ...string) (finish func() response) {
	h.t.Helper()
	g := h.gate(name)
	done := make(chan response, 1)
	go func() {
		defer close(done) // also when request fails the test and exits
		done <- h.request(cookie, append([]string{"wait:" + name}, ops...)...)
	}()
	select {
	case <-g.arrived:
	case r := <-done:
		h.t.Fatalf("held request %q ended before reaching its gate: %d %s", name, r.status, r.body)
	case <-time.After(10 * time.Second):
		h.t.Fatalf("held request %q never reached its gate", name)
	}
	return func() response {
		g.open()
		return <-done
	}
}

// scriptResult is what the script handler reports in its body.
type scriptResult struct {
	Get   map[string]json.RawMessage `json:"get"`
	Pop   map[string]json.RawMessage `json:"pop"`
	Has   map[string]bool            `json:"has"`
	Keys  [][]string                 `json:"keys"`
	Errs  []string                   `json:"errs"`
	Token string                     `json:"token"`
}

// script runs the ops in the query string in order:
//
//	set:K:JSON  del:K  clear  rotate  freeze  get:K  wait:NAME
//	write (start the body)  flush (via ResponseController)  readfrom
//	setfunc:K (an unencodable value)  status:N  nobody (write no body)
//	deadline (SetWriteDeadline via ResponseController)  hijack (answer raw, stop)
//	token (report pgsession.Token)  cache:VALUE (set Cache-Control)
//	lifetime:IDLE,ABSOLUTE,PERSISTENT (SetLifetime)  others (DeleteOtherSessions)
//	pop:K  has:K  keys  save (call Manager.Save, which must refuse)
//
// An op prefixed "outer/" acts on the session of the outer Manager (see
// newNestedHarness) instead of the innermost.
func (h *harness) script(w http.ResponseWriter, r *http.Request) {
	inner := pgsession.FromContext(r.Context())
	if inner != h.m.FromContext(r.Context()) {
		h.t.Errorf("script: FromContext and Manager.FromContext return different sessions")
	}
	res := scriptResult{Get: map[string]json.RawMessage{}, Pop: map[string]json.RawMessage{}, Has: map[string]bool{}}
	note := func(err error) {
		if err != nil {
			res.Errs = append(res.Errs, err.Error())
		}
	}
	body := true
	for _, op := range r.URL.Query()["op"] {
		s := inner
		if rest, ok := strings.CutPrefix(op, "outer/"); ok && h.outer != nil {
			s, op = h.outer.Manager.FromContext(r.Context()), rest
		}
		name, arg, _ := strings.Cut(op, ":")
		switch name {
		case "set":
			k, v, _ := strings.Cut(arg, ":")
			note(s.Set(k, json.RawMessage(v)))
		case "setfunc":
			note(s.Set(arg, func() {}))
		case "del":
			note(s.Delete(arg))
		case "clear":
			note(s.Clear())
		case "rotate":
			note(pgsession.RotateKey(r.Context()))
		case "freeze":
			note(pgsession.FreezeSession(r.Context()))
		case "get":
			var v json.RawMessage
			ok, err := s.Get(arg, &v)
			note(err)
			if ok {
				res.Get[arg] = v
			}
		case "pop":
			var v json.RawMessage
			ok, err := s.Pop(arg, &v)
			note(err)
			if ok {
				res.Pop[arg] = v
			}
		case "has":
			res.Has[arg] = s.Has(arg)
		case "keys":
			res.Keys = append(res.Keys, s.Keys())
		case "save":
			_, err := h.m.Save(r.Context())
			note(err)
		case "wait":
			g := h.gate(arg)
			close(g.arrived)
			<-g.release
		case "write":
			_, _ = io.WriteString(w, "started\n")
		case "flush":
			note(http.NewResponseController(w).Flush())
		case "readfrom":
			_, err := io.Copy(w, strings.NewReader("copied\n"))
			note(err)
		case "status":
			var code int
			_, _ = fmt.Sscan(arg, &code)
			w.Header().Set("X-Handler", "yes")
			w.WriteHeader(code)
		case "cache":
			w.Header().Set("Cache-Control", arg)
		case "nobody":
			body = false
		case "lifetime": // lifetime:IDLE,ABSOLUTE,PERSISTENT as Go durations and a bool
			var l pgsession.Lifetime
			parts := strings.Split(arg, ",")
			if len(parts) != 3 {
				h.t.Errorf("script: bad lifetime %q", arg)
				break
			}
			var err1, err2 error
			l.IdleTimeout, err1 = time.ParseDuration(parts[0])
			l.AbsoluteTimeout, err2 = time.ParseDuration(parts[1])
			l.Persistent = parts[2] == "true"
			if err := errors.Join(err1, err2); err != nil {
				h.t.Errorf("script: bad lifetime %q: %v", arg, err)
				break
			}
			note(pgsession.SetLifetime(r.Context(), l))
		case "current": // report the SessionID that ListByPrincipal marks Current
			var p json.RawMessage
			_, _ = s.Get("user_id", &p)
			list, err := h.m.ListByPrincipal(r.Context(), p)
			note(err)
			for _, d := range list {
				if d.Current {
					res.Get["current"] = json.RawMessage(strconv.Quote(d.ID.String()))
				}
			}
		case "others": // sign out all other devices
			_, err := h.m.DeleteOtherSessions(r.Context())
			note(err)
		case "token":
			tok, err := pgsession.Token(r.Context())
			note(err)
			res.Token = tok
		case "deadline":
			// Reaches the server's writer through Unwrap.
			note(http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)))
		case "hijack":
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				note(err)
				break
			}
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			_ = buf.Flush()
			_ = conn.Close()
			return
		default:
			h.t.Errorf("script: unknown op %q", op)
		}
	}
	if body {
		b, _ := json.Marshal(res)
		_, _ = w.Write(append([]byte("\n"), b...))
	}
}

// client is one browser: it keeps the session cookie between requests.
type client struct {
	h      *harness
	cookie string // current session cookie value, "" for none
}

func (h *harness) client() *client { return &client{h: h} }

// response is what a scripted request returned.
type response struct {
	status    int
	header    http.Header
	body      string
	result    scriptResult
	setCookie *http.Cookie // the session cookie sent, if any
}

func (r response) errs() string { return strings.Join(r.result.Errs, "; ") }

// do runs the ops in one request, carrying and updating the cookie.
func (c *client) do(ops ...string) response {
	c.h.t.Helper()
	resp := c.h.request(c.cookieHeader(), ops...)
	if ck := resp.setCookie; ck != nil {
		if ck.MaxAge < 0 {
			c.cookie = ""
		} else {
			c.cookie = ck.Value
		}
	}
	return resp
}

func (c *client) cookieHeader() string {
	if c.cookie == "" {
		return ""
	}
	return c.h.cookieName + "=" + c.cookie
}

// request sends ops with the raw Cookie header cookie ("" for none).
func (h *harness) request(cookie string, ops ...string) response {
	h.t.Helper()
	hdr := http.Header{}
	if cookie != "" {
		hdr.Set("Cookie", cookie)
	}
	return h.send(hdr, ops...)
}

// bearer sends ops with "Authorization: Bearer token".
func (h *harness) bearer(token string, ops ...string) response {
	h.t.Helper()
	return h.send(http.Header{"Authorization": {"Bearer " + token}}, ops...)
}

// send sends ops with the request headers hdr.
func (h *harness) send(hdr http.Header, ops ...string) response {
	h.t.Helper()
	q := url.Values{"op": ops}
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+"/?"+q.Encode(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header = hdr
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("request %v: %v", ops, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("request %v: read body: %v", ops, err)
	}
	out := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if i := strings.LastIndexByte(out.body, '\n'); i >= 0 && resp.StatusCode < 500 {
		_ = json.Unmarshal([]byte(out.body[i+1:]), &out.result)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == h.cookieName {
			if out.setCookie != nil {
				h.t.Errorf("request %v: two session cookies in one response", ops)
			}
			out.setCookie = ck
		}
	}
	return out
}

// key returns the session key inside a cookie value signed by h.
func (h *harness) key(value string) []byte {
	h.t.Helper()
	key, ok := h.keyOf(value)
	if !ok {
		h.t.Fatalf("cookie %q does not verify", value)
	}
	return key
}

// decodeKey returns the key in value, failing t unless hashKey signed it.
func decodeKey(t *testing.T, name, value string, hashKey []byte) []byte {
	t.Helper()
	payload, err := unsign(name, value, hashKey)
	if err != nil {
		t.Fatalf("cookie %q does not verify: %v", value, err)
	}
	key, _ := splitToken(payload)
	return key
}

// stored loads the row of the session whose cookie value is value: the row
// stored under its key, or ErrNotFound, also when the key is only the
// predecessor of a row's key (see predecessorOf).
func (h *harness) stored(value string) (*backend.Record, error) {
	h.t.Helper()
	rec, err := h.load(value)
	if err == nil && rec.Predecessor {
		return nil, backend.ErrNotFound
	}
	return rec, err
}

// predecessorOf reports whether the key of cookie value value names no row
// but is the immediate predecessor of a session's current key.
func (h *harness) predecessorOf(value string) bool {
	h.t.Helper()
	rec, err := h.load(value)
	return err == nil && rec.Predecessor
}

func (h *harness) load(value string) (*backend.Record, error) {
	h.t.Helper()
	key, sid, ok := h.credOf(value)
	if !ok {
		h.t.Fatalf("cookie %q does not verify", value)
	}
	return h.backend.Backend.Load(context.Background(), backend.ID(sha256.Sum256(key)), sid)
}

// counts returns the backend calls so far.
func (h *harness) counts() (loads, applies int64) {
	return h.backend.loads.Load(), h.backend.applies.Load()
}
