package pgsession

import "testing"

func TestHasNUL(t *testing.T) {
	for raw, want := range map[string]bool{
		`"a\u0000b"`:   true,
		`"\\u0000"`:    false, // a backslash, then the text u0000
		`"\\\u0000"`:   true,  // a backslash, then NUL
		`{"\u0000":1}`: true,
		`"plain"`:      false,
	} {
		if got := hasNUL([]byte(raw)); got != want {
			t.Errorf("hasNUL(%s) = %v, want %v", raw, got, want)
		}
	}
}
