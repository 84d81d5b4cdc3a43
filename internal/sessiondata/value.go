package sessiondata

import (
	"encoding/json"
	"strconv"
)

// DecodeValue decodes raw, one valid JSON value (a session's stored value),
// into dst with json.Unmarshal's result and error. The values handlers read
// most, a plain string, an integer or a boolean into a *string, *int,
// *int64 or *bool, are decoded directly, without reflection; anything else,
// and any case where the direct decoding might differ from json.Unmarshal
// (escapes, invalid UTF-8, null, a number that is not a plain integer or
// out of range), goes to json.Unmarshal.
func DecodeValue(raw []byte, dst any) error {
	switch d := dst.(type) {
	case *string:
		if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
			s, err := jsonString(raw)
			if err == nil {
				*d = s
			}
			return err
		}
	case *int:
		if v, ok := plainInt(raw, strconv.IntSize); ok {
			*d = int(v)
			return nil
		}
	case *int64:
		if v, ok := plainInt(raw, 64); ok {
			*d = v
			return nil
		}
	case *bool:
		switch string(raw) {
		case "true":
			*d = true
			return nil
		case "false":
			*d = false
			return nil
		}
	}
	return json.Unmarshal(raw, dst)
}

// plainInt parses raw as an integer of bitSize bits when it is one in JSON's
// plain form: an optional minus and digits, without a leading zero (but "0"
// itself), fraction or exponent.
func plainInt(raw []byte, bitSize int) (int64, bool) {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 19 || digits[0] == '0' && len(digits) > 1 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(string(raw), 10, bitSize)
	return v, err == nil
}
