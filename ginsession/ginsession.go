// Package ginsession runs pgsession's middleware in gin.
//
//	r := gin.New()
//	r.Use(ginsession.Middleware(m)) // m is a *pgsession.Manager
//
// Handlers reach the session through the request's context, not through the
// *gin.Context (which is a context.Context that does not see the request's
// values unless gin.Engine.ContextWithFallback is set):
//
//	s := pgsession.FromContext(c.Request.Context())
//	err := pgsession.RotateKey(c.Request.Context())
//
// Why an adapter: gin handlers write through c.Writer, gin's own writer
// around the connection. Wrapping c.Next in Manager.Middleware with only
// c.Request replaced leaves c.Writer outside the middleware's writer, so the
// session is never saved when the response starts: the response goes out
// without Set-Cookie and the session is lost without an error. Middleware
// routes c.Writer through the middleware's writer for the rest of the chain,
// so the session is saved (and the cookie set) before the first byte, as in
// any net/http handler.
//
// It lives in a module of its own so that gin enters the graph of programs
// that use it, and no other.
package ginsession

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/pgsession/pgsession"
)

// Middleware returns gin middleware that runs m.Middleware around the rest
// of the handler chain. For the handlers after it, c.Request carries the
// session in its context and c.Writer writes through the middleware's
// writer, keeping gin's semantics: the status set by c.Status (or
// WriteHeader) is sent, and the session saved, at the first write, Flush,
// WriteHeaderNow or Hijack, or when the chain returns having written
// nothing, so headers and the session may still change until then.
// c.Writer's Status, Size and Written report the response as gin's writer
// does, and http.ResponseController reaches the connection through it.
// When the chain returns, c.Writer and c.Request are restored, so the
// middleware before this one (a logger, say) sees the final status and
// size.
//
// When the session cannot be loaded (or the request is refused, see
// Manager.Middleware), Config.ErrorHandler answers and the chain is aborted:
// no later handler runs. When the save fails, the ErrorHandler's response
// replaces the handler's, and the handler's writes return an error.
func Middleware(m *pgsession.Manager) gin.HandlerFunc {
	return func(c *gin.Context) {
		orig, origReq := c.Writer, c.Request
		ran := false
		m.Middleware(http.HandlerFunc(func(sw http.ResponseWriter, r *http.Request) {
			ran = true
			w := &writer{ResponseWriter: orig, sw: sw, status: orig.Status()}
			c.Writer, c.Request = w, r
			defer func() { c.Writer, c.Request = orig, origReq }()
			c.Next()
			if !w.started {
				// The chain wrote nothing: the status it set goes out with
				// the session's cookie, saved now. gin sends the header
				// when the whole chain has run.
				w.started = true
				sw.WriteHeader(w.status)
			}
		})).ServeHTTP(orig, c.Request)
		if !ran {
			c.Abort() // the ErrorHandler answered; the handlers must not run
		}
	}
}

// writer is c.Writer inside Middleware: gin's ResponseWriter whose bytes go
// through the middleware's writer sw, which saves the session when the
// response starts and writes to the original c.Writer. The embedded original
// answers Size, Written, CloseNotify and Pusher; the status the chain sets
// stays here until the response starts, as in gin's own writer.
type writer struct {
	gin.ResponseWriter                     // the original c.Writer, which sw wraps
	sw                 http.ResponseWriter // the middleware's writer
	status             int                 // set by WriteHeader, sent when the response starts
	started            bool                // the status was passed on to sw
}

var _ gin.ResponseWriter = (*writer)(nil)

// Header returns the response's header (that of sw, the same map).
func (w *writer) Header() http.Header { return w.sw.Header() }

// WriteHeader sets the status to send when the response starts, like gin's
// writer: codes of zero or less are ignored, and so is a change once the
// response has started.
func (w *writer) WriteHeader(code int) {
	if code > 0 && !w.started {
		w.status = code
	}
}

// start passes the status on to sw, which saves the session first.
func (w *writer) start() {
	if !w.started {
		w.started = true
		w.sw.WriteHeader(w.status)
	}
}

// WriteHeaderNow starts the response: the session is saved and the header
// sent.
func (w *writer) WriteHeaderNow() {
	w.start()
	w.ResponseWriter.WriteHeaderNow()
}

// Write starts the response if needed and writes b.
func (w *writer) Write(b []byte) (int, error) {
	w.start()
	return w.sw.Write(b)
}

// WriteString writes s.
func (w *writer) WriteString(s string) (int, error) {
	w.start()
	return io.WriteString(w.sw, s)
}

// Status returns the status set so far, or once the response has started,
// the one sent (the ErrorHandler's when the save failed).
func (w *writer) Status() int {
	if !w.started {
		return w.status
	}
	return w.ResponseWriter.Status()
}

// Flush starts the response and flushes it.
func (w *writer) Flush() { _ = w.FlushError() }

// FlushError is Flush for http.ResponseController, reporting failures.
func (w *writer) FlushError() error {
	w.WriteHeaderNow()
	return http.NewResponseController(w.sw).Flush()
}

// Hijack saves the session and hands over the connection, if nothing of the
// body was written (gin's rule). As with any hijacked connection, the
// session's cookie cannot reach the client: set the session up in an
// earlier request.
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.Size() > 0 {
		return w.ResponseWriter.Hijack() // gin's error: the body was written
	}
	w.started = true // no status is sent on a hijacked connection
	return http.NewResponseController(w.sw).Hijack()
}

// Unwrap returns the middleware's writer, for http.ResponseController.
func (w *writer) Unwrap() http.ResponseWriter { return w.sw }
