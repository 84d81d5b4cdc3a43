package sessiondata

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
)

// FuzzDecodeData checks the read path's JSON decoder against
// json.Unmarshal into a map[string]json.RawMessage: the same error or
// success, the same keys and the same value bytes, for any input; and
// DecodeValidData against it on valid JSON (and for no panic on the rest).
func FuzzDecodeData(f *testing.F) {
	for _, s := range []string{`{}`, `{"n": 1}`, ` { "k" : "v" , "n":[1, {"a": "}]"}]} `, `{"a":1,"a":2}`,
		`{"a\"b\\c": "x\"y", "\u00e9": null, "t": true}`, "{\"\xff\": 1}", `null`, `[1]`, `"x"`, `{"a":1,}`, ``, `{"a":-1.5e3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeData(data)
		valid, validErr := DecodeValidData(data) // never panics
		if json.Valid(data) && (!reflect.DeepEqual(valid, got) || (validErr == nil) != (err == nil)) {
			t.Fatalf("DecodeValidData(%q) = %q, %v; DecodeData %q, %v", data, valid, validErr, got, err)
		}
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(data, &want)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("DecodeData(%q) error %v, json.Unmarshal %v", data, err, wantErr)
		}
		if err != nil {
			return
		}
		if (got == nil) != (want == nil) || len(got) != len(want) {
			t.Fatalf("DecodeData(%q) = %q, json.Unmarshal %q", data, got, want)
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || !bytes.Equal(g, v) {
				t.Fatalf("DecodeData(%q)[%q] = %q, json.Unmarshal %q", data, k, g, v)
			}
			checkDecodeValue(t, v)
		}
	})
}

// checkDecodeValue compares DecodeValue with json.Unmarshal on raw, into
// each type it decodes directly and one it does not, starting from a value
// already there (json.Unmarshal of null leaves it).
func checkDecodeValue(t *testing.T, raw []byte) {
	t.Helper()
	for _, newDst := range []func() any{
		func() any { s := "old"; return &s },
		func() any { n := 7; return &n },
		func() any { n := int64(7); return &n },
		func() any { b := true; return &b },
		func() any { f := 1.5; return &f },
	} {
		got, want := newDst(), newDst()
		err, wantErr := DecodeValue(raw, got), json.Unmarshal(raw, want)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() || !reflect.DeepEqual(got, want) {
			t.Fatalf("DecodeValue(%q, %T) = %v (%v), json.Unmarshal %v (%v)", raw, got, reflect.ValueOf(got).Elem(), err,
				reflect.ValueOf(want).Elem(), wantErr)
		}
	}
}

// TestDecodeValueEdges checks DecodeValue where its direct decoding ends;
// FuzzDecodeData checks it on every value of the objects it decodes.
func TestDecodeValueEdges(t *testing.T) {
	for _, raw := range []string{`"plain"`, `""`, `"a\"b"`, `"\u00e9"`, "\"\xff\"", `"é"`, `0`, `-0`, `007`, `-`, `12`, `-12`,
		`1.0`, `1e3`, `9223372036854775807`, `9223372036854775808`, `-9223372036854775808`, `-9223372036854775809`,
		`99999999999999999999`, `true`, `false`, `null`, `[1]`, `{"a":1}`} {
		checkDecodeValue(t, []byte(raw))
	}
}

// FuzzJSONEqual checks JSONEqual's shortcut for scalars against the full
// comparison (both decoded, numbers kept as text), on valid JSON: what
// session values are.
func FuzzJSONEqual(f *testing.F) {
	for _, p := range [][2]string{{`1`, `2`}, {`1`, `1.0`}, {`"a"`, `"\u0061"`}, {`"<"`, `"\u003c"`}, {`"a" `, `"a"`},
		{`true`, `true`}, {`null`, `false`}, {"\"\xff\"", "\"\xfe\""}, {`{"a":1}`, `{"a": 1}`}, {`[1,2]`, `[1, 2]`}} {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if !json.Valid(a) || !json.Valid(b) {
			return
		}
		x, errA := decodeNumbers(a)
		y, errB := decodeNumbers(b)
		want := bytes.Equal(a, b) || errA == nil && errB == nil && reflect.DeepEqual(x, y)
		if got := JSONEqual(a, b); got != want {
			t.Fatalf("JSONEqual(%q, %q) = %v, want %v", a, b, got, want)
		}
	})
}

// FuzzEncode checks EncodeValue against json.Marshal on arbitrary strings
// and numbers (the same bytes), and AppendObject against json.Marshal of
// the map (the same JSON value): a key of the fuzzed string, with a value
// EncodeValue wrote.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<a&b>", "tab\t", "é", "\u2028", "\xff", "{}"} {
		f.Add(s, int64(len(s)))
	}
	f.Add("x", int64(-1<<63))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		for _, v := range []any{s, n, int(n), n%2 == 0, float64(n), []string{s}} {
			got, err := EncodeValue(v)
			want, wantErr := json.Marshal(v)
			if !bytes.Equal(got, want) || (err == nil) != (wantErr == nil) {
				t.Fatalf("EncodeValue(%#v) = %s, %v; json.Marshal %s, %v", v, got, err, want, wantErr)
			}
		}
		value, _ := EncodeValue(s)
		set := map[string]json.RawMessage{s: value, "n": json.RawMessage(strconv.FormatInt(n, 10)), "o": json.RawMessage(`{"a": [1, 2]}`)}
		got := AppendObject(nil, set)
		want, err := json.Marshal(set)
		if err != nil {
			t.Fatal(err)
		}
		var x, y any
		if err := json.Unmarshal(got, &x); err != nil {
			t.Fatalf("AppendObject(%q) = %s: %v", set, got, err)
		}
		if err := json.Unmarshal(want, &y); err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("AppendObject(%q) = %s, json.Marshal %s", set, got, want)
		}
	})
}
