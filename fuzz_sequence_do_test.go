package pgsession_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The requests of FuzzRequestSequence, each checked against the model of
// seqRig (fuzz_sequence_test.go).

// seqReq is one request.
type seqReq struct {
	who     int // client index, or -1 for an anonymous attacker request
	op      int
	cookies []string // session cookie values, in order
	bearer  string
	public  bool
	toss    bool // the attacker's cookie rides along with the victim's
}

func (q seqReq) String() string {
	who := "attacker"
	if q.who >= 0 {
		who = fmt.Sprintf("client %d (%s)", q.who, seqUsers[q.who])
	}
	s := fmt.Sprintf("%s %s: %d cookies", who, seqOpNames[q.op], len(q.cookies))
	if q.bearer != "" {
		s += ", bearer"
	}
	if q.toss {
		s += ", tossed"
	}
	return s
}

// do sends req, checks the response against the model and updates it.
func (r *seqRig) do(req seqReq) {
	r.t.Helper()
	r.trace = append(r.trace, req.String())

	// Which keys the server will look up, and what it will find.
	var keys []string
	bearer := false
	if k, ok := r.decode(req.bearer); ok {
		keys, bearer = []string{k}, true
	} else {
		for _, c := range req.cookies {
			if k, ok := r.decode(c); ok && !slices.Contains(keys, k) && len(keys) < 3 {
				keys = append(keys, k)
			}
		}
	}
	live, loneExpired, ambiguous := "", "", false
	unknown := 0 // keys that name no row
	for _, k := range keys {
		row, ok := r.rows[k]
		if s := r.successor(k); !ok && s != "" && r.expired(r.rows[s]) {
			// A key a rotation retired loads its successor. RotationGrace
			// is off, so it names nothing, unless the successor is
			// expired: expiry is judged first, and the key stands for the
			// expired row (which a lone key's save removes on sight).
			k, row, ok = s, r.rows[s], true
		}
		switch {
		case !ok:
			unknown++
		case r.expired(row):
			if len(keys) == 1 {
				loneExpired = k
			}
		case live != "":
			ambiguous = true
		default:
			live = k
		}
		if ambiguous {
			live = ""
			break
		}
	}

	// Send it.
	q := url.Values{}
	if req.op == seqLogin {
		user := "mallory"
		if req.who >= 0 {
			user = seqUsers[req.who]
		}
		q.Set("u", user)
	}
	if req.public {
		q.Set("public", "1")
	}
	hr, err := http.NewRequest(http.MethodPost, r.url+"/"+seqOpNames[req.op]+"?"+q.Encode(), nil)
	if err != nil {
		r.fatalf("%v", err)
	}
	if len(req.cookies) > 0 {
		var parts []string
		for _, c := range req.cookies {
			parts = append(parts, r.name+"="+c)
		}
		hr.Header.Set("Cookie", strings.Join(parts, "; "))
	}
	if req.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+req.bearer)
	}
	loads := r.backend.loads.Load()
	resp, err := r.client.Do(hr)
	if err != nil {
		r.fatalf("%v", err)
	}
	raw, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		r.fatalf("read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		r.fatalf("status %d: %s", resp.StatusCode, raw)
	}
	var body seqBody
	if err := json.Unmarshal(raw, &body); err != nil {
		r.fatalf("body %q: %v", raw, err)
	}

	// Caching rules.
	var vary []string
	for _, v := range resp.Header.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			vary = append(vary, strings.TrimSpace(f))
		}
	}
	if !slices.Contains(vary, "Cookie") || !slices.Contains(vary, "Authorization") {
		r.fatalf("Vary %q, want Cookie and Authorization", resp.Header.Values("Vary"))
	}
	var set []*http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == r.name {
			set = append(set, c)
		}
	}
	if len(set) > 1 {
		r.fatalf("%d session Set-Cookies: %q", len(set), resp.Header.Values("Set-Cookie"))
	}
	if len(set) == 1 {
		want := "no-store"
		if req.public {
			want = "private, max-age=60"
		}
		if cc := resp.Header.Values("Cache-Control"); len(cc) != 1 || cc[0] != want {
			r.fatalf("Set-Cookie with Cache-Control %q, want %q", cc, want)
		}
	}

	// Backend load: none for credentials that do not verify.
	if n := r.backend.loads.Load() - loads; len(keys) == 0 && n != 0 {
		r.fatalf("no credential verifies, yet %d loads", n)
	}

	// The session shown.
	if body.Had {
		if req.who < 0 {
			r.fatalf("an anonymous attacker request was served as %q", body.User)
		}
		if !req.toss && body.User != seqUsers[req.who] {
			r.fatalf("client %d (%s) was served as %q", req.who, seqUsers[req.who], body.User)
		}
		if !slices.ContainsFunc(keys, func(k string) bool { return !r.dead[k] }) {
			r.fatalf("only dead keys, yet served as %q", body.User)
		}
	}
	var row *seqRow
	if live != "" {
		row = r.rows[live]
	}
	switch {
	case row == nil && body.Had:
		r.fatalf("served as %q n=%d; want no session (ambiguous %v)", body.User, body.N, ambiguous)
	case row != nil && (!body.Had || body.User != row.user || body.N != row.n):
		r.fatalf("served %+v; want %q n=%d", body, row.user, row.n)
	case row != nil && !req.toss && row.owner != req.who:
		r.fatalf("model: client %d holds a session of %d", req.who, row.owner)
	}

	// The cookie and token the response should carry: "" for none, "same"
	// for the live key, "new" for a fresh one, "expire". An update of a
	// live session leaves the client's cookie as it is (with no idle
	// timeout its expiry, the creation plus the absolute timeout, never
	// moves), unless the cookie that brought the key must be re-signed.
	wantCookie, wantToken := "", ""
	switch {
	case req.op == seqLogin:
		wantCookie, wantToken = "new", "new"
	case live != "" && req.op == seqInc:
		wantToken = "same"
		if r.mustResign(req.cookies, live) {
			wantCookie = "same"
		}
	case live != "" && req.op == seqRead:
		wantToken = "same"
	case live != "" && req.op == seqLogout:
		wantCookie = "expire"
	case live != "" && req.op == seqRotate:
		wantCookie, wantToken = "new", "new"
	case loneExpired != "":
		wantCookie = "expire" // the dead row is deleted on sight
	case unknown > 0 && unknown == len(keys):
		wantCookie = "expire" // a cookie of nothing: the client should stop sending it
	}
	if bearer {
		wantCookie = "" // a bearer client gets its token from the body
	}
	tokenKey := ""
	if body.Token != "" {
		k, ok := r.decode(body.Token)
		if !ok {
			r.fatalf("token %q does not verify", body.Token)
		}
		tokenKey = k
	}
	switch {
	case wantToken == "" && tokenKey != "":
		r.fatalf("unexpected token")
	case wantToken != "" && tokenKey == "":
		r.fatalf("no token, want the %s key", wantToken)
	case r.dead[tokenKey]:
		r.fatalf("the token carries a dead key")
	case wantToken == "same" && tokenKey != live:
		r.fatalf("the token carries another key")
	case wantToken == "new" && r.seen[tokenKey]:
		r.fatalf("the token carries a key seen before, not a fresh one")
	}
	cookieKey := ""
	switch {
	case wantCookie == "" && len(set) != 0:
		r.fatalf("unexpected Set-Cookie %q", resp.Header.Values("Set-Cookie"))
	case wantCookie != "" && len(set) == 0:
		r.fatalf("no Set-Cookie, want %s", wantCookie)
	case wantCookie == "expire" && (set[0].MaxAge >= 0 || set[0].Value != ""):
		r.fatalf("Set-Cookie %q, want an expiry", resp.Header.Values("Set-Cookie"))
	case wantCookie == "same" || wantCookie == "new":
		k, ok := r.decode(set[0].Value)
		switch {
		case !ok:
			r.fatalf("Set-Cookie %q does not verify", resp.Header.Values("Set-Cookie"))
		case r.dead[k]:
			r.fatalf("Set-Cookie carries a dead key")
		case wantCookie == "same" && k != live:
			r.fatalf("Set-Cookie carries another key than the live one")
		case wantCookie == "new" && k != tokenKey:
			r.fatalf("Set-Cookie and token carry different new keys")
		}
		cookieKey = k
	}

	// Update the model.
	for _, k := range keys {
		r.seen[k] = true
	}
	if tokenKey != "" {
		r.remember(tokenKey, body.Token)
	}
	if cookieKey != "" {
		r.remember(cookieKey, set[0].Value)
	}
	if wantToken == "new" {
		r.seen[tokenKey] = true
		r.issued = append(r.issued, tokenKey)
	}
	if loneExpired != "" {
		r.kill(loneExpired, true)
	}
	switch {
	case req.op == seqLogin:
		if live != "" {
			r.kill(live, true)
		}
		r.rows[tokenKey] = &seqRow{owner: req.who, user: q.Get("u"), created: r.now, prev: live} // a rotation of the live session, or an insert
	case live == "":
	case req.op == seqInc:
		row.n++
	case req.op == seqLogout:
		r.kill(live, true)
	case req.op == seqRotate:
		r.rows[tokenKey] = &seqRow{owner: row.owner, user: row.user, n: row.n, created: r.now, prev: live}
		r.kill(live, true)
	}

	// The client keeps what it was given. A victim served as the attacker
	// (its own cookie dead, the tossed one live: only the __Host- prefix
	// prevents that) does not keep the attacker's cookie.
	if req.who < 0 || (req.toss && (live == "" || live != r.keyOf(r.jar[req.who]))) {
		return
	}
	if len(set) == 1 {
		r.jar[req.who] = set[0].Value
		if set[0].MaxAge < 0 {
			r.jar[req.who] = ""
		}
	}
	if body.Token != "" {
		r.token[req.who] = body.Token
	}
}

func (r *seqRig) keyOf(value string) string {
	k, _ := r.decode(value)
	return k
}

// mustResign reports whether the cookie that carried the live key is not
// current, so that an update of the session sends it again, re-signed (see
// signer.decodeCurrent): of the old form (a key without a session ID) or
// signed with an older hash key. Neither reaches a live key here: the
// Manager has one hash key, so whatever verifies is signed with it, and
// the only old-form values are forged ones of unknown keys (forge); it is
// kept so that a forge presenting a real key in the old form would be
// predicted. (A bearer request gets no cookie at all: see do.)
func (r *seqRig) mustResign(cookies []string, live string) bool {
	for _, c := range cookies {
		var payload []byte
		if k, ok := r.decode(c); ok && k == live {
			return r.codec.Decode(r.name, c, &payload) == nil && len(payload) == 32
		}
	}
	return false
}
