package sessiondata

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// EncodeValue returns json.Marshal(v): the same bytes and the same error.
// The values handlers store most, a string, an int, an int64 or a bool, are
// encoded directly, without reflection; a string is written as is when no
// byte of it needs an escape (json.Marshal escapes ", \, control
// characters, <, > and &, and replaces invalid UTF-8), anything else goes
// to json.Marshal.
func EncodeValue(v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		if plainString(x) {
			b := make([]byte, 0, len(x)+2)
			return append(append(append(b, '"'), x...), '"'), nil
		}
	case int:
		return strconv.AppendInt(nil, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(nil, x, 10), nil
	case bool:
		return strconv.AppendBool(nil, x), nil
	}
	return json.Marshal(v)
}

// plainString reports whether json.Marshal writes s between quotes as is:
// printable ASCII without ", \, <, > or &. (Other UTF-8 is written as is
// too, but for U+2028 and U+2029; it takes json.Marshal's path.)
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= utf8.RuneSelf, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// AppendObject appends to dst the JSON object of set: each key, quoted as
// json.Marshal quotes it, and its value as is. The values must be valid
// JSON (as Marshal writes them, or as PostgreSQL's jsonb returns them).
// The keys come in the map's order: json.Marshal sorts them, but a jsonb
// column stores an object the same whatever the order.
func AppendObject(dst []byte, set map[string]json.RawMessage) []byte {
	dst = append(dst, '{')
	first := true
	for k, v := range set {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if plainString(k) {
			dst = append(append(append(dst, '"'), k...), '"')
		} else {
			q, _ := json.Marshal(k) // a string always encodes
			dst = append(dst, q...)
		}
		dst = append(append(dst, ':'), v...)
	}
	return append(dst, '}')
}
