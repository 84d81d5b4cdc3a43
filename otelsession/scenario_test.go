package otelsession_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/otelsession"
	"github.com/pgsession/pgsession/pgsessiontest"
)

// Markers stored in sessions: no span or metric may carry them.
const (
	cartMarker = "cart-secret-7c1e"
	userMarker = "user-secret-ada-51f0"
)

// scenario is a server with pgsession's middleware on a wrapped backend,
// each request inside a parent span of its own (as otelhttp would start),
// and the telemetry it produced.
type scenario struct {
	t       *testing.T
	env     *pgsessiontest.Env
	srv     *httptest.Server
	spans   *tracetest.SpanRecorder
	reader  *sdkmetric.ManualReader
	fail    *atomic.Bool
	hashKey []byte
	secrets map[string]string // forbidden text → what it is
	seen    int               // spans already returned by next
	pg      bool
}

func startScenario(t *testing.T, name string) *scenario {
	t.Helper()
	var inner = backends[0].new
	for _, b := range backends {
		if b.name == name {
			inner = b.new
		}
	}
	base := inner(t)
	store, fail := withFailure(base)
	sc := &scenario{t: t, spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), fail: fail,
		secrets: map[string]string{}, pg: name == "postgres"}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sc.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sc.reader))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })

	sc.hashKey = make([]byte, 32)
	copy(sc.hashKey, "0123456789abcdef-hash-key-secret")
	sc.forbid(string(sc.hashKey), "the hash key")
	sc.forbid(hex.EncodeToString(sc.hashKey), "the hash key, hex")
	sc.forbid(cartMarker, "session data")
	sc.forbid(userMarker, "session data")
	sc.env = pgsessiontest.NewEnv(t, pgsession.Config{
		Backend:      otelsession.Wrap(store, otelsession.WithTracerProvider(tp), otelsession.WithMeterProvider(mp)),
		HashKeys:     [][]byte{sc.hashKey},
		PrincipalKey: "user",
		Carrier:      pgsession.CookieOrBearer,
		Cookie:       pgsession.CookieConfig{Insecure: true},
	})
	unregister, err := otelsession.RegisterStats(sc.env.Manager, otelsession.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unregister(); err != nil {
			t.Error(err)
		}
	})

	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pgsession.FromContext(r.Context())
		var err error
		switch r.URL.Path {
		case "/cart":
			err = s.Set("cart", cartMarker)
		case "/login":
			if err = s.Set("user", userMarker); err == nil {
				err = pgsession.RotateKey(r.Context())
			}
		case "/write":
			err = s.Set("n", time.Now().UnixNano())
		case "/freeze":
			if err = s.Set("n", 0); err == nil {
				err = pgsession.FreezeSession(r.Context())
			}
		case "/token":
			var tok string
			if tok, err = pgsession.Token(r.Context()); err == nil {
				_, _ = io.WriteString(w, tok)
				return
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	handler := sc.env.Manager.Middleware(app)
	tracer := tp.Tracer("test-server")
	sc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-No-Span") != "" {
			handler.ServeHTTP(w, r)
			return
		}
		ctx, span := tracer.Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		handler.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(sc.srv.Close)
	return sc
}

// forbid records text that no span, attribute, event or metric may hold.
func (sc *scenario) forbid(text, what string) {
	if len(text) >= 8 {
		sc.secrets[text] = what
	}
}

// forbidToken forbids a cookie value or bearer token and everything in it:
// the session ID, the key and the key's hash (the row's ID).
func (sc *scenario) forbidToken(v string) {
	sc.t.Helper()
	sc.forbid(v, "a cookie value or token")
	outer, err := base64.URLEncoding.DecodeString(v)
	parts := bytes.SplitN(outer, []byte("|"), 3) // the mac is raw bytes, "|" among them
	if err != nil || len(parts) != 3 {
		sc.t.Fatalf("token %q: not date|payload|mac", v)
	}
	payload, err := base64.URLEncoding.DecodeString(string(parts[1]))
	if err != nil || len(payload) != 48 {
		sc.t.Fatalf("token payload: %d bytes, %v", len(payload), err)
	}
	sid, key := payload[:16], payload[16:]
	id := sha256.Sum256(key)
	sc.forbid(string(parts[1]), "a token's payload")
	for what, b := range map[string][]byte{"the session ID": sid, "the key": key, "the row ID": id[:]} {
		sc.forbid(hex.EncodeToString(b), what+", hex")
		sc.forbid(base64.StdEncoding.EncodeToString(b), what+", base64")
		sc.forbid(base64.RawURLEncoding.EncodeToString(b), what+", base64url")
		sc.forbid(string(b), what)
	}
}

// step is one request and what its telemetry must say.
type step struct {
	name    string
	method  string
	path    string
	cookies []string // "name=value"
	bearer  string
	noSpan  bool // no parent span: the decision gets a pgsession.request span

	status  int
	loads   []string // the pgsession.load spans' results, in order
	saves   []string // the pgsession.save spans' ops, in order
	outcome string
	op      string
	renewal bool
	skipped bool
	frozen  bool
	refused bool
	carrier string
	failed  bool // an error is recorded on the request's span

	saveRenewal bool // the save span's renewal
}

// do runs st, checks its spans and returns the cookie the response set (a
// live one), if any, and its body.
func (sc *scenario) do(st step) (cookie, body string) {
	t := sc.t
	t.Helper()
	req, err := http.NewRequest(st.method, sc.srv.URL+st.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.cookies {
		req.Header.Add("Cookie", c)
	}
	if st.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+st.bearer)
	}
	if st.noSpan {
		req.Header.Set("X-No-Span", "1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	body = string(b)
	if resp.StatusCode != st.status {
		t.Errorf("%s: status %d, want %d (%s)", st.name, resp.StatusCode, st.status, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == sc.env.CookieName() && c.MaxAge >= 0 {
			cookie = c.Name + "=" + c.Value
			sc.forbidToken(c.Value)
		}
	}

	spans := sc.next(st)
	var root sdktrace.ReadOnlySpan
	var loads, saves []sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch s.Name() {
		case "pgsession.load":
			loads = append(loads, s)
		case "pgsession.save":
			saves = append(saves, s)
		case st.method + " " + st.path, "pgsession.request":
			root = s
		default:
			t.Errorf("%s: unexpected span %q", st.name, s.Name())
		}
	}
	if root == nil {
		t.Fatalf("%s: no request span among %d", st.name, len(spans))
	}
	wantRoot := st.method + " " + st.path
	if st.noSpan {
		wantRoot = "pgsession.request"
	}
	if root.Name() != wantRoot {
		t.Errorf("%s: request span %q, want %q", st.name, root.Name(), wantRoot)
	}

	// The load and save spans are children of the request's span.
	for _, s := range append(slices.Clone(loads), saves...) {
		if st.noSpan {
			if s.Parent().IsValid() {
				t.Errorf("%s: %s has a parent without a request span", st.name, s.Name())
			}
			continue
		}
		if s.Parent().SpanID() != root.SpanContext().SpanID() || s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Errorf("%s: %s is not a child of the request's span", st.name, s.Name())
		}
		if s.SpanKind() != trace.SpanKindInternal {
			t.Errorf("%s: %s kind %v", st.name, s.Name(), s.SpanKind())
		}
		if mode, ok := attr(s, otelsession.StatementModeKey); ok != sc.pg || (sc.pg && mode.AsString() == "") {
			t.Errorf("%s: %s statement mode %q (present %v), want one on PostgreSQL only", st.name, s.Name(), mode.String(), ok)
		}
	}

	var gotLoads, gotSaves []string
	for _, s := range loads {
		r, _ := attr(s, otelsession.LoadResultKey)
		gotLoads = append(gotLoads, r.AsString())
		if r.AsString() == "error" {
			sc.checkError(st.name, s, true)
		} else if s.Status().Code == codes.Error {
			t.Errorf("%s: load %s has status Error", st.name, r.AsString())
		}
	}
	for _, s := range saves {
		op, _ := attr(s, otelsession.OpKey)
		gotSaves = append(gotSaves, op.AsString())
		if ren, _ := attr(s, otelsession.RenewalKey); ren.AsBool() != st.saveRenewal {
			t.Errorf("%s: save span renewal %v", st.name, ren.AsBool())
		}
		if r, _ := attr(s, otelsession.SaveResultKey); r.AsString() != "ok" {
			t.Errorf("%s: save result %q", st.name, r.AsString())
		}
	}
	if !slices.Equal(gotLoads, st.loads) {
		t.Errorf("%s: load spans %q, want %q", st.name, gotLoads, st.loads)
	}
	if !slices.Equal(gotSaves, st.saves) {
		t.Errorf("%s: save spans %q, want %q", st.name, gotSaves, st.saves)
	}

	// The request's decision, on the request's span.
	want := map[attribute.Key]attribute.Value{
		otelsession.OutcomeKey: attribute.StringValue(st.outcome),
		otelsession.OpKey:      attribute.StringValue(st.op),
		otelsession.RenewalKey: attribute.BoolValue(st.renewal),
		otelsession.SkippedKey: attribute.BoolValue(st.skipped),
		otelsession.FrozenKey:  attribute.BoolValue(st.frozen),
		otelsession.RefusedKey: attribute.BoolValue(st.refused),
		otelsession.CarrierKey: attribute.StringValue(st.carrier),
	}
	for k, v := range want {
		if got, ok := attr(root, k); !ok || got != v {
			t.Errorf("%s: request span %s = %q, want %q", st.name, k, got.String(), v.String())
		}
	}
	hasErr := slices.ContainsFunc(root.Events(), func(e sdktrace.Event) bool { return e.Name == "exception" })
	if hasErr != st.failed {
		t.Errorf("%s: request span has an exception event: %v, want %v", st.name, hasErr, st.failed)
	}
	if st.noSpan && st.failed {
		sc.checkError(st.name, root, true)
	}
	return cookie, body
}

// next returns the spans ended since the last call, once the request's
// span (ended by the server after the response) is among them.
func (sc *scenario) next(st step) []sdktrace.ReadOnlySpan {
	sc.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ended := sc.spans.Ended()
		for _, s := range ended[sc.seen:] {
			if s.Name() == st.method+" "+st.path || s.Name() == "pgsession.request" {
				spans := ended[sc.seen:]
				sc.seen = len(ended)
				return spans
			}
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("%s: the request's span did not end", st.name)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkError checks that s records errDown: an exception event without the
// row ID its message had, and, on otelsession's own spans, status Error.
func (sc *scenario) checkError(name string, s sdktrace.ReadOnlySpan, own bool) {
	t := sc.t
	t.Helper()
	if own && s.Status().Code != codes.Error {
		t.Errorf("%s: %s status %v, want Error", name, s.Name(), s.Status())
	}
	var msg string
	for _, e := range s.Events() {
		if e.Name == "exception" {
			for _, a := range e.Attributes {
				if a.Key == "exception.message" {
					msg = a.Value.AsString()
				}
			}
		}
	}
	if !strings.Contains(msg, "database is down") || !strings.Contains(msg, "[redacted]") || strings.Contains(msg, "5f4dcc3b") {
		t.Errorf("%s: %s exception message %q, want the failure with its row ID redacted", name, s.Name(), msg)
	}
	if et, _ := attr(s, otelsession.ErrorTypeKey); s.Name() != "pgsession.request" && et.AsString() != "_OTHER" {
		t.Errorf("%s: error.type %q", name, et.String())
	}
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, a := range s.Attributes() {
		if a.Key == k {
			return a.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestScenario runs a scripted sequence through the middleware on a wrapped
// backend, memory and PostgreSQL, and checks every request's spans, then
// the metrics, then that nothing recorded holds a secret.
func TestScenario(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { runScenario(t, b.name) })
	}
}

func runScenario(t *testing.T, name string) {
	sc := startScenario(t, name)
	const get, post = http.MethodGet, http.MethodPost

	sc.do(step{name: "anonymous read", method: get, path: "/read", status: 200,
		outcome: "none", op: "none", carrier: "cookie"})
	cart, _ := sc.do(step{name: "a cart: a new session", method: post, path: "/cart", status: 200,
		saves: []string{"insert"}, outcome: "none", op: "insert", carrier: "cookie"})
	login, _ := sc.do(step{name: "login with rotation", method: post, path: "/login", cookies: []string{cart}, status: 200,
		loads: []string{"found"}, saves: []string{"rotate"}, outcome: "live", op: "rotate", carrier: "cookie"})
	if cart == "" || login == "" || cart == login {
		t.Fatalf("cookies: cart %q, login %q", cart, login)
	}
	sc.do(step{name: "write", method: post, path: "/write", cookies: []string{login}, status: 200,
		loads: []string{"found"}, saves: []string{"update"}, outcome: "live", op: "update", carrier: "cookie"})
	sc.do(step{name: "read within the resolution", method: get, path: "/read", cookies: []string{login}, status: 200,
		loads: []string{"found"}, outcome: "live", op: "none", skipped: true, carrier: "cookie"})
	sc.do(step{name: "frozen", method: post, path: "/freeze", cookies: []string{login}, status: 200,
		loads: []string{"found"}, outcome: "live", op: "none", frozen: true, carrier: "cookie"})
	_, token := sc.do(step{name: "a token", method: get, path: "/token", cookies: []string{login}, status: 200,
		loads: []string{"found"}, outcome: "live", op: "none", skipped: true, carrier: "cookie"})
	sc.forbidToken(token)
	sc.do(step{name: "bearer read", method: get, path: "/read", bearer: token, status: 200,
		loads: []string{"found"}, outcome: "live", op: "none", skipped: true, carrier: "bearer"})
	sc.do(step{name: "a stale key after a login", method: post, path: "/write", cookies: []string{cart}, status: http.StatusConflict,
		loads: []string{"predecessor"}, outcome: "retired", op: "none", refused: true, carrier: "cookie", failed: true})
	other, _ := sc.do(step{name: "another visitor's session", method: post, path: "/cart", status: 200,
		saves: []string{"insert"}, outcome: "none", op: "insert", carrier: "cookie"})
	sc.do(step{name: "tossed cookies", method: get, path: "/read", cookies: []string{login, other}, status: 200,
		loads: []string{"found", "found"}, outcome: "ambiguous", op: "none", carrier: "cookie"})
	sc.fail.Store(true)
	sc.do(step{name: "a database error", method: get, path: "/read", cookies: []string{login}, status: http.StatusInternalServerError,
		loads: []string{"error"}, outcome: "none", op: "none", carrier: "cookie", failed: true})
	sc.do(step{name: "a database error, no request span", method: get, path: "/read", cookies: []string{login}, noSpan: true,
		status: http.StatusInternalServerError, loads: []string{"error"}, outcome: "none", op: "none", carrier: "cookie", failed: true})
	sc.fail.Store(false)
	renewed, _ := sc.do(step{name: "login again: a renewal", method: post, path: "/login", cookies: []string{login}, status: 200,
		loads: []string{"found"}, saves: []string{"rotate"}, outcome: "live", op: "rotate", renewal: true, saveRenewal: true, carrier: "cookie"})
	sc.env.Clock.Advance(pgsession.DefaultIdleTimeout)
	sc.do(step{name: "expired", method: get, path: "/read", cookies: []string{renewed}, status: 200,
		loads: []string{"found"}, saves: []string{"delete"}, outcome: "expired", op: "delete", carrier: "cookie"})
	sc.do(step{name: "no request span", method: get, path: "/read", noSpan: true, status: 200,
		outcome: "none", op: "none", carrier: "cookie"})

	sc.checkMetrics(map[string]uint64{
		"Loads": 8, "Misses": 1, "Inserts": 2, "Updates": 1, "Rotations": 2, "Deletes": 1,
		"SkippedWrites": 3, "LostRaces": 0, "StaleKeys": 1, "Errors": 3, "Ambiguous": 1,
	})
	sc.checkSecrets()
}

// checkMetrics checks that every Stats counter's instrument equals
// Manager.Stats() and want, and that the histograms have a point per span.
func (sc *scenario) checkMetrics(want map[string]uint64) {
	t := sc.t
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := sc.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	stats := reflect.ValueOf(sc.env.Manager.Stats())
	metrics := map[string]metricdata.Metrics{}
	for _, scope := range rm.ScopeMetrics {
		if scope.Scope.Name != otelsession.ScopeName {
			t.Errorf("scope %q", scope.Scope.Name)
		}
		for _, m := range scope.Metrics {
			metrics[m.Name] = m
		}
	}
	for i := range stats.NumField() {
		field := stats.Type().Field(i).Name
		name := "pgsession.session." + snake(field)
		m, ok := metrics[name]
		if !ok {
			t.Errorf("Stats.%s: no instrument %s", field, name)
			continue
		}
		sum, ok := m.Data.(metricdata.Sum[int64])
		if !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality || len(sum.DataPoints) != 1 {
			t.Errorf("%s: %T %+v, want one cumulative monotonic int64 sum", name, m.Data, m.Data)
			continue
		}
		got := uint64(sum.DataPoints[0].Value)
		if got != stats.Field(i).Uint() || got != want[field] {
			t.Errorf("%s = %d, Stats.%s = %d, want %d", name, got, field, stats.Field(i).Uint(), want[field])
		}
		if !strings.HasPrefix(m.Unit, "{") {
			t.Errorf("%s: unit %q", name, m.Unit)
		}
	}

	count := func(name string) (n int) {
		for _, s := range sc.spans.Ended() {
			if s.Name() == name {
				n++
			}
		}
		return n
	}
	for name, span := range map[string]string{"pgsession.load.duration": "pgsession.load", "pgsession.save.duration": "pgsession.save"} {
		m, ok := metrics[name]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		h, ok := m.Data.(metricdata.Histogram[float64])
		if !ok || m.Unit != "s" {
			t.Errorf("%s: %T in %q", name, m.Data, m.Unit)
			continue
		}
		var n uint64
		byResult := map[string]uint64{}
		for _, p := range h.DataPoints {
			n += p.Count
			r, _ := p.Attributes.Value(otelsession.LoadResultKey)
			if name == "pgsession.save.duration" {
				r, _ = p.Attributes.Value(otelsession.OpKey)
			}
			byResult[r.AsString()] += p.Count
		}
		if int(n) != count(span) {
			t.Errorf("%s: %d points, %d %s spans", name, n, count(span), span)
		}
		t.Logf("%s: %v", name, byResult)
		if name == "pgsession.load.duration" && byResult["error"] != 2 {
			t.Errorf("%s: %d errors, want 2", name, byResult["error"])
		}
		if name == "pgsession.save.duration" && (byResult["insert"] != 2 || byResult["rotate"] != 2 || byResult["delete"] != 1 || byResult["update"] != 1) {
			t.Errorf("%s: by op %v", name, byResult)
		}
	}

	// Nothing per request in the metrics' attributes.
	for name, m := range metrics {
		for _, kv := range pointAttributes(m) {
			sc.checkText(fmt.Sprintf("metric %s attribute %s", name, kv.Key), kv.Value.String())
		}
	}
}

func pointAttributes(m metricdata.Metrics) []attribute.KeyValue {
	var out []attribute.KeyValue
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes.ToSlice()...)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes.ToSlice()...)
		}
	}
	return out
}

// snake turns a Stats field name into its instrument's last part.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// checkSecrets checks every span's name, attributes, events and status
// against the secrets the scenario saw.
func (sc *scenario) checkSecrets() {
	sc.t.Helper()
	if len(sc.secrets) < 20 {
		sc.t.Fatalf("only %d secrets collected", len(sc.secrets))
	}
	for _, s := range sc.spans.Ended() {
		where := "span " + s.Name()
		sc.checkText(where+" name", s.Name())
		sc.checkText(where+" status", s.Status().Description)
		for _, a := range s.Attributes() {
			sc.checkText(where+" attribute "+string(a.Key), a.Value.String())
		}
		for _, e := range s.Events() {
			sc.checkText(where+" event", e.Name)
			for _, a := range e.Attributes {
				sc.checkText(where+" event attribute "+string(a.Key), a.Value.String())
			}
		}
	}
}

func (sc *scenario) checkText(where, text string) {
	sc.t.Helper()
	for secret, what := range sc.secrets {
		if strings.Contains(text, secret) {
			sc.t.Errorf("%s holds %s: %q", where, what, text)
		}
	}
}
