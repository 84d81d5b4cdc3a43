package ginsession_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/ginsession"
	"github.com/pgsession/pgsession/internal/frameworktest"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// requireLogin is the route group's login check, as gin middleware.
func requireLogin(c *gin.Context) {
	if !frameworktest.LoggedIn(c.Request) {
		c.String(http.StatusUnauthorized, "log in first\n")
		c.Abort()
	}
}

// TestScenario runs the frameworks' end-to-end scenario (login with
// RotateKey, a write read back, a streamed response, logout) behind gin
// with the adapter, on the memory backend and on PostgreSQL.
func TestScenario(t *testing.T) {
	frameworktest.Test(t, func(a *frameworktest.App) http.Handler {
		r := gin.New()
		r.Use(gin.Recovery(), ginsession.Middleware(a.Manager))
		for _, rt := range a.Public() {
			r.Handle(rt.Method, rt.Path, gin.WrapH(rt.Handler))
		}
		g := r.Group("/", requireLogin)
		for _, rt := range a.Protected() {
			g.Handle(rt.Method, rt.Path, gin.WrapH(rt.Handler))
		}
		return r
	})
}

// naive is the adapter that loses sessions (issue 20): the middleware runs
// around c.Next with c.Request replaced, but gin's handlers write through
// c.Writer, which bypasses the middleware's writer. Kept here to show that
// TestLoginAlwaysSetsCookie tells the two apart.
func naive(m *pgsession.Manager) gin.HandlerFunc {
	return func(c *gin.Context) {
		m.Middleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			c.Request = r
			c.Next()
		})).ServeHTTP(c.Writer, c.Request)
	}
}

// loginStyles are ways a gin handler answers a login, each the last step
// of a handler that has set the user in the session.
var loginStyles = map[string]struct {
	respond func(c *gin.Context)
	status  int
}{
	"String":         {func(c *gin.Context) { c.String(http.StatusOK, "welcome") }, http.StatusOK},
	"JSON":           {func(c *gin.Context) { c.JSON(http.StatusCreated, gin.H{"user": "ada"}) }, http.StatusCreated},
	"Data":           {func(c *gin.Context) { c.Data(http.StatusOK, "text/plain", []byte("welcome")) }, http.StatusOK},
	"Writer.Write":   {func(c *gin.Context) { _, _ = c.Writer.Write([]byte("welcome")) }, http.StatusOK},
	"WriteString":    {func(c *gin.Context) { _, _ = c.Writer.WriteString("welcome") }, http.StatusOK},
	"io.WriteString": {func(c *gin.Context) { _, _ = io.WriteString(c.Writer, "welcome") }, http.StatusOK},
	"Status":         {func(c *gin.Context) { c.Status(http.StatusNoContent) }, http.StatusNoContent},
	"nothing":        {func(c *gin.Context) {}, http.StatusOK},
	"AbortWithStatus": {func(c *gin.Context) { c.AbortWithStatus(http.StatusAccepted) },
		http.StatusAccepted},
	"WriteHeaderNow": {func(c *gin.Context) { c.Status(http.StatusAccepted); c.Writer.WriteHeaderNow() },
		http.StatusAccepted},
	"Redirect": {func(c *gin.Context) { c.Redirect(http.StatusSeeOther, "/me") }, http.StatusSeeOther},
	"Flush":    {func(c *gin.Context) { c.Writer.Flush() }, http.StatusOK},
	"ResponseController.Flush": {func(c *gin.Context) {
		if err := http.NewResponseController(c.Writer).Flush(); err != nil {
			panic(err)
		}
	}, http.StatusOK},
	"Stream": {func(c *gin.Context) {
		n := 0
		c.Stream(func(w io.Writer) bool { _, _ = fmt.Fprintf(w, "chunk %d\n", n); n++; return n < 3 })
	}, http.StatusOK},
	"SSEvent": {func(c *gin.Context) { c.SSEvent("login", "ada"); c.Writer.Flush() }, http.StatusOK},
	"ServeContent": {func(c *gin.Context) {
		http.ServeContent(c.Writer, c.Request, "welcome.txt", time.Time{}, strings.NewReader("welcome"))
	}, http.StatusOK},
}

// login serves a gin app with mw on a fresh memory backend, logs in with
// the given style and returns whether the login set the session cookie and
// what user the next request's session has.
func login(t *testing.T, adapter func(*pgsession.Manager) gin.HandlerFunc, style string) (cookie bool, user string) {
	t.Helper()
	app := frameworktest.NewApp(t, pgsession.NewMemoryBackend())
	m := app.Manager
	r := gin.New()
	r.Use(adapter(m))
	r.POST("/login", func(c *gin.Context) {
		if err := pgsession.RotateKey(c.Request.Context()); err != nil {
			t.Error(err)
		}
		if err := pgsession.FromContext(c.Request.Context()).Set("user", "ada"); err != nil {
			t.Error(err)
		}
		loginStyles[style].respond(c)
	})
	r.GET("/me", func(c *gin.Context) {
		_, _ = pgsession.FromContext(c.Request.Context()).Get("user", &user)
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp := do(t, srv, "POST", "/login", nil)
	if resp.StatusCode != loginStyles[style].status {
		t.Errorf("login: status %d, want %d", resp.StatusCode, loginStyles[style].status)
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == m.CookieName() && c.Value != "" {
			ck = c
		}
	}
	if ck == nil {
		return false, ""
	}
	do(t, srv, "GET", "/me", ck)
	return true, user
}

func do(t *testing.T, srv *httptest.Server, method, path string, ck *http.Cookie) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	// No redirects followed: the answer to the login is what is checked.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestLoginAlwaysSetsCookie: whichever way a gin handler writes its answer,
// a login through the adapter sets the session cookie and the next request
// has the session. The naive adapter fails this for every answer that
// writes a byte or sends the header.
func TestLoginAlwaysSetsCookie(t *testing.T) {
	for style := range loginStyles {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			cookie, user := login(t, ginsession.Middleware, style)
			if !cookie || user != "ada" {
				t.Errorf("login answered with %s: cookie set %t, next request's user %q; want true, \"ada\"", style, cookie, user)
			}
		})
	}
}

// TestNaiveAdapterLosesSession shows the failure mode the adapter exists
// for, so that TestLoginAlwaysSetsCookie is known to detect it: through the
// naive adapter a login answered with c.String gets no cookie.
func TestNaiveAdapterLosesSession(t *testing.T) {
	for _, style := range []string{"String", "JSON", "AbortWithStatus", "Stream"} {
		if cookie, user := login(t, naive, style); cookie || user != "" {
			t.Errorf("naive adapter, %s: cookie set %t, user %q; the test no longer shows the failure", style, cookie, user)
		}
	}
}

// observation is what a handler, and the middleware before the adapter,
// see of c.Writer at each step.
type observation struct {
	Before, AfterStatus, AfterWrite, Outer [3]int // Status, Size, Written (0/1)
	Header                                 string
}

func observe(w gin.ResponseWriter) [3]int {
	written := 0
	if w.Written() {
		written = 1
	}
	return [3]int{w.Status(), w.Size(), written}
}

// TestWriterLikeGin: c.Writer's Status, Size and Written, seen by the
// handler and by the middleware before the adapter, are those of gin
// without the adapter, and a header set after c.Status still goes out.
func TestWriterLikeGin(t *testing.T) {
	run := func(withSession bool) (observation, *http.Response) {
		var o observation
		r := gin.New()
		r.Use(func(c *gin.Context) { c.Next(); o.Outer = observe(c.Writer) })
		if withSession {
			r.Use(ginsession.Middleware(frameworktest.NewApp(t, pgsession.NewMemoryBackend()).Manager))
		}
		r.GET("/", func(c *gin.Context) {
			o.Before = observe(c.Writer)
			c.Status(http.StatusCreated)
			c.Header("X-After-Status", "yes")
			o.AfterStatus = observe(c.Writer)
			if withSession {
				if err := pgsession.FromContext(c.Request.Context()).Set("k", 1); err != nil {
					t.Errorf("Set after c.Status: %v", err)
				}
			}
			_, _ = c.Writer.WriteString("abc")
			o.AfterWrite = observe(c.Writer)
			if withSession {
				if err := pgsession.FromContext(c.Request.Context()).Set("k", 2); !errors.Is(err, pgsession.ErrAlreadySaved) {
					t.Errorf("Set after the first write: %v, want ErrAlreadySaved", err)
				}
			}
		})
		srv := httptest.NewServer(r)
		defer srv.Close()
		resp := do(t, srv, "GET", "/", nil)
		o.Header = resp.Header.Get("X-After-Status")
		return o, resp
	}
	plain, _ := run(false)
	got, resp := run(true)
	if !reflect.DeepEqual(got, plain) {
		t.Errorf("with the adapter c.Writer shows %+v, gin alone %+v", got, plain)
	}
	if resp.StatusCode != http.StatusCreated || len(resp.Cookies()) != 1 {
		t.Errorf("response: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
}

// TestResponseController: http.ResponseController reaches the connection
// through c.Writer (deadlines, full duplex, Flush).
func TestResponseController(t *testing.T) {
	m := frameworktest.NewApp(t, pgsession.NewMemoryBackend()).Manager
	r := gin.New()
	r.Use(ginsession.Middleware(m))
	r.GET("/", func(c *gin.Context) {
		rc := http.NewResponseController(c.Writer)
		for name, err := range map[string]error{
			"SetReadDeadline":  rc.SetReadDeadline(time.Now().Add(time.Minute)),
			"SetWriteDeadline": rc.SetWriteDeadline(time.Now().Add(time.Minute)),
			"EnableFullDuplex": rc.EnableFullDuplex(),
		} {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		_ = pgsession.FromContext(c.Request.Context()).Set("k", 1)
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		if !c.Writer.Written() || c.Writer.Size() != 0 {
			t.Errorf("after Flush: Written %t, Size %d", c.Writer.Written(), c.Writer.Size())
		}
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	if resp := do(t, srv, "GET", "/", nil); len(resp.Cookies()) != 1 {
		t.Errorf("cookies %v, want the session's", resp.Cookies())
	}
}

// TestHijack: c.Writer.Hijack (directly or through http.ResponseController)
// saves the session and hands over the connection; gin writes nothing more.
func TestHijack(t *testing.T) {
	for name, hijack := range map[string]func(c *gin.Context) (io.ReadWriteCloser, error){
		"Hijack": func(c *gin.Context) (io.ReadWriteCloser, error) {
			conn, _, err := c.Writer.Hijack()
			return conn, err
		},
		"ResponseController": func(c *gin.Context) (io.ReadWriteCloser, error) {
			conn, _, err := http.NewResponseController(c.Writer).Hijack()
			return conn, err
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := frameworktest.NewApp(t, pgsession.NewMemoryBackend()).Manager
			r := gin.New()
			r.Use(ginsession.Middleware(m))
			r.GET("/", func(c *gin.Context) {
				_ = pgsession.FromContext(c.Request.Context()).Set("k", 1)
				conn, err := hijack(c)
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				defer conn.Close()
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
				if !c.Writer.Written() {
					t.Error("Written is false after Hijack")
				}
			})
			srv := httptest.NewServer(r)
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hijacked" {
				t.Errorf("body %q", body)
			}
			if st := m.Stats(); st.Inserts != 1 {
				t.Errorf("sessions inserted: %d, want 1 (saved at Hijack)", st.Inserts)
			}
		})
	}
}

// failing is a memory backend whose Load or Apply fails on demand.
type failing struct {
	*pgsession.MemoryBackend
	load, apply atomic.Bool
}

var errDown = errors.New("backend down")

func (b *failing) Load(ctx context.Context, id backend.ID, sid pgsession.SessionID) (*backend.Record, error) {
	if b.load.Load() {
		return nil, errDown
	}
	return b.MemoryBackend.Load(ctx, id, sid)
}

func (b *failing) Apply(ctx context.Context, a backend.Action) error {
	if b.apply.Load() {
		return errDown
	}
	return b.MemoryBackend.Apply(ctx, a)
}

// TestBackendFailure: when the session cannot be loaded, the ErrorHandler
// answers and no handler after the adapter runs; when it cannot be saved,
// the ErrorHandler's answer replaces the handler's, whose write fails.
func TestBackendFailure(t *testing.T) {
	b := &failing{MemoryBackend: pgsession.NewMemoryBackend()}
	m := frameworktest.NewApp(t, b).Manager
	var ran atomic.Int32
	var writeErr atomic.Value
	r := gin.New()
	r.Use(ginsession.Middleware(m))
	r.GET("/", func(c *gin.Context) {
		ran.Add(1)
		_ = pgsession.FromContext(c.Request.Context()).Set("k", 1)
		if _, err := c.Writer.WriteString("handler's answer"); err != nil {
			writeErr.Store(err)
		}
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp := do(t, srv, "GET", "/", nil)
	ck := resp.Cookies()
	if resp.StatusCode != 200 || len(ck) != 1 {
		t.Fatalf("first request: %d, cookies %v", resp.StatusCode, ck)
	}

	b.load.Store(true)
	resp = do(t, srv, "GET", "/", ck[0])
	if resp.StatusCode != http.StatusInternalServerError || ran.Load() != 1 {
		t.Errorf("load failure: status %d, handler ran %d times; want 500, once (the first request)", resp.StatusCode, ran.Load())
	}

	b.load.Store(false)
	b.apply.Store(true)
	resp = do(t, srv, "GET", "/", nil)
	if resp.StatusCode != http.StatusInternalServerError || len(resp.Cookies()) != 0 {
		t.Errorf("save failure: status %d, cookies %v; want 500 without cookie", resp.StatusCode, resp.Cookies())
	}
	if err, _ := writeErr.Load().(error); err == nil {
		t.Error("save failure: the handler's write returned no error")
	}
}

// TestPanic: a handler that panics saves nothing, and gin.Recovery before
// the adapter answers through the restored c.Writer.
func TestPanic(t *testing.T) {
	m := frameworktest.NewApp(t, pgsession.NewMemoryBackend()).Manager
	r := gin.New()
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, _ any) {
		c.String(http.StatusInternalServerError, "recovered")
	}), ginsession.Middleware(m))
	r.GET("/", func(c *gin.Context) {
		_ = pgsession.FromContext(c.Request.Context()).Set("k", 1)
		panic("handler bug")
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || string(body) != "recovered" || len(resp.Cookies()) != 0 {
		t.Errorf("got %d %q, cookies %v; want 500 \"recovered\" without cookie", resp.StatusCode, body, resp.Cookies())
	}
	if st := m.Stats(); st.Inserts != 0 {
		t.Errorf("%d sessions inserted, want 0", st.Inserts)
	}
}
