// Package sessiondata holds the JSON handling of session data that the
// root package and the PostgreSQL backend share: the read path's decoder
// of a stored data object, and the comparison of JSON values.
package sessiondata

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// DecodeData parses a session's stored data, a JSON object, into one raw
// value per key: the result json.Unmarshal gives for a
// map[string]json.RawMessage (the same values, the last of duplicate keys,
// the same errors), at a fraction of the cost on the read path: json.Valid,
// then one pass that slices the values out of a single copy of data,
// instead of reflection and an allocation per value.
func DecodeData(data []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(data) {
		return unmarshal(data)
	}
	return decodeValid(data)
}

// DecodeValidData is DecodeData for data known to be valid JSON, as
// PostgreSQL returns a jsonb (or json) value: it skips the validation, which
// costs more than the decoding (about 40 instructions a byte). On data that
// is not valid JSON its result is unspecified, but it does not panic.
func DecodeValidData(data []byte) (m map[string]json.RawMessage, err error) {
	defer func() {
		if recover() != nil { // ran off the end of data that was not valid JSON
			m, err = DecodeData(data)
		}
	}()
	return decodeValid(data)
}

// unmarshal is json.Unmarshal into a map[string]json.RawMessage.
func unmarshal(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := json.Unmarshal(data, &m)
	return m, err
}

// decodeValid decodes data, valid JSON.
func decodeValid(data []byte) (map[string]json.RawMessage, error) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		// Not an object (null, or a JSON value that is not an object):
		// json.Unmarshal gives the result and its error.
		return unmarshal(data)
	}
	buf := bytes.Clone(data) // the values alias it: one copy for all of them
	m := make(map[string]json.RawMessage)
	i = skipSpace(buf, i+1)
	if buf[i] == '}' {
		return m, nil
	}
	for {
		end := endOfString(buf, i) // buf[i] is the key's opening quote
		key, err := jsonString(buf[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(buf, skipSpace(buf, end)+1) // past the colon
		start := i
		i = endOfValue(buf, i)
		m[key] = buf[start:i:i] // capped, so an append to one value cannot overwrite the next
		i = skipSpace(buf, i)
		if buf[i] == '}' {
			return m, nil
		}
		i = skipSpace(buf, i+1) // past the comma
	}
}

// The helpers below assume valid JSON: on other data they may run off its
// end (DecodeValidData recovers).

// jsonString returns the string that the quoted JSON string raw stands for:
// its bytes when they hold no escape and are valid UTF-8, else what
// json.Unmarshal gives (with its error).
func jsonString(raw []byte) (string, error) {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string // escapes, or invalid UTF-8 that json replaces
	err := json.Unmarshal(raw, &s)
	return s, err
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// endOfString returns the index just past the string whose opening quote
// is at i.
func endOfString(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// endOfValue returns the index just past the value that starts at i.
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = endOfString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && !isSpace(b[i]) { // a number, true, false or null
		i++
	}
	return i
}
