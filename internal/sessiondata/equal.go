package sessiondata

import (
	"bytes"
	"encoding/json"
	"reflect"
	"unicode/utf8"
)

// JSONEqual reports whether a and b encode the same JSON value. Stored values
// come back from PostgreSQL's jsonb reformatted, so equal values may differ in
// bytes.
func JSONEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if plainScalar(a) && plainScalar(b) {
		// A number (compared as its literal text), true, false, null or a
		// string without escapes: equal only as the same bytes.
		return false
	}
	x, errA := decodeNumbers(a)
	y, errB := decodeNumbers(b)
	return errA == nil && errB == nil && reflect.DeepEqual(x, y)
}

// plainScalar reports whether raw is not an object or array, has no
// surrounding space, and holds no escape and only valid UTF-8 (as Marshal
// writes a number, string or literal, and DecodeData slices one): then its
// decoded value is told by its bytes alone.
func plainScalar(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	first, last := raw[0], raw[len(raw)-1]
	return first != '{' && first != '[' && !isSpace(first) && !isSpace(last) &&
		bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// decodeNumbers decodes raw keeping numbers as their literal text, so that
// values which differ only beyond float64 precision are not taken as equal.
func decodeNumbers(raw json.RawMessage) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}
