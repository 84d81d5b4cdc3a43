package pgstore

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"
)

// render returns query with {t} replaced by the table. The template is
// scanned once, so a table name that itself contains "{t}" is never
// substituted again. Values go as parameters (modeText, modeDriver) or are
// rendered by execute (modeExecute).
func (b *Backend) render(query string) string {
	var out strings.Builder
	out.Grow(len(query) + len(b.table))
	for {
		i := strings.Index(query, "{t}")
		if i < 0 {
			out.WriteString(query)
			return out.String()
		}
		out.WriteString(query[:i])
		out.WriteString(b.table)
		query = query[i+len("{t}"):]
	}
}

// writeLiteral writes v to out as a PostgreSQL literal: NULL, a boolean,
// an integer, bytea as hex, a string or timestamp as an escape string
// E'...', or a text[] array.
func writeLiteral(out *strings.Builder, v any) error {
	switch v := v.(type) {
	case nil:
		out.WriteString("NULL")
	case bool:
		out.WriteString(strings.ToUpper(strconv.FormatBool(v)))
	case int:
		out.WriteString(strconv.Itoa(v))
	case int64:
		out.WriteString(strconv.FormatInt(v, 10))
	case []byte:
		if v == nil {
			out.WriteString("NULL")
			break
		}
		out.WriteString(`E'\\x`)
		var buf [64]byte
		for len(v) > 0 {
			k := min(len(v), len(buf)/2)
			hex.Encode(buf[:], v[:k])
			out.Write(buf[:2*k])
			v = v[k:]
		}
		out.WriteString(`'::bytea`)
	case string:
		return writeString(out, v)
	case time.Time:
		return writeString(out, string(pq.FormatTimestamp(v)))
	case []string:
		if v == nil {
			out.WriteString("NULL")
			break
		}
		out.WriteString("ARRAY[")
		for i, e := range v {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := writeString(out, e); err != nil {
				return err
			}
		}
		out.WriteString("]::text[]")
	default:
		return fmt.Errorf("pgsession: cannot write %T as a literal", v)
	}
	return nil
}

// quoteString returns s as an escape string literal E'...'.
func quoteString(s string) (string, error) {
	var out strings.Builder
	err := writeString(&out, s)
	return out.String(), err
}

// writeString writes s to out as an escape string literal E'...'.
func writeString(out *strings.Builder, s string) error {
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("pgsession: string %q is not valid UTF-8 text without NUL", s)
	}
	out.WriteString("E'")
	_, _ = escaper.WriteString(out, s)
	out.WriteByte('\'')
	return nil
}

// escaper doubles backslashes and single quotes, for E'...'.
var escaper = strings.NewReplacer(`\`, `\\`, `'`, `''`)
