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

// table name or a value that itself contains "$1" or "{t}" is never
// substituted again. (The templates hold no other "$" or "{t}".)
func (b *Backend) render(query string, args []any, inline bool) (string, error) {
	var out strings.Builder
	out.Grow(len(query) + len(b.table) + 80*len(args))
	if err := b.expand(&out, query, args, inline); err != nil {
		return "", err
	}
	return out.String(), nil
}

// expand writes query to out with {t} replaced by the table and, when
// inline, each $n by args[n-1] as a literal.
func (b *Backend) expand(out *strings.Builder, query string, args []any, inline bool) error {
	for i := 0; i < len(query); {
		switch {
		case strings.HasPrefix(query[i:], "{t}"):
			out.WriteString(b.table)
			i += len("{t}")
		case inline && query[i] == '$':
			j := i + 1
			for j < len(query) && '0' <= query[j] && query[j] <= '9' {
				j++
			}
			n, err := strconv.Atoi(query[i+1 : j])
			if err != nil || n < 1 || n > len(args) {
				return fmt.Errorf("pgsession: statement wants %s, has %d arguments", query[i:j], len(args))
			}
			if err := writeLiteral(out, args[n-1]); err != nil {
				return err
			}
			i = j
		default:
			out.WriteByte(query[i])
			i++
		}
	}
	return nil
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
