package pgstore

import (
	"encoding/binary"
	"testing"
	"time"
)

// decodeTimes reads array_send's form of three timestamptz, the third
// NULL or not, and refuses anything else (the statement and the decoding
// disagree).
func TestDecodeTimes(t *testing.T) {
	at := func(us int64) time.Time { return time.UnixMicro(pgEpoch + us).UTC() }
	array := func(elems ...int64) []byte { // -1: NULL
		b := binary.BigEndian.AppendUint32(nil, 1)
		b = binary.BigEndian.AppendUint32(b, 0) // the null flag is not checked
		b = binary.BigEndian.AppendUint32(b, 1184)
		b = binary.BigEndian.AppendUint32(b, uint32(len(elems)))
		b = binary.BigEndian.AppendUint32(b, 1)
		for _, e := range elems {
			if e == -1 {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, 8)
			b = binary.BigEndian.AppendUint64(b, uint64(e))
		}
		return b
	}
	got, err := decodeTimes(array(10, 20, 30))
	if err != nil || got != [3]time.Time{at(10), at(20), at(30)} {
		t.Errorf("three times: %v, %v", got, err)
	}
	got, err = decodeTimes(array(10, 20, -1))
	if err != nil || got != [3]time.Time{at(10), at(20), {}} {
		t.Errorf("never rotated: %v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"created_at NULL":  array(-1, 20, 30),
		"accessed_at NULL": array(10, -1, 30),
		"two elements":     array(10, 20),
		"four elements":    array(10, 20, 30, 40),
		"truncated":        array(10, 20, 30)[:40],
		"empty":            nil,
	} {
		if got, err := decodeTimes(b); err == nil {
			t.Errorf("%s: %v, want an error", name, got)
		}
	}
}
