package pgtest

import (
	"encoding/binary"
	"testing"
)

// msg builds a typed protocol message with a body of n bytes.
func msg(typ byte, n int) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+n))
	return append(b, make([]byte, n)...)
}

// untyped builds a startup-phase message with a protocol code.
func untyped(code uint32, n int) []byte {
	b := make([]byte, 8, 8+n)
	binary.BigEndian.PutUint32(b, uint32(8+n))
	binary.BigEndian.PutUint32(b[4:], code)
	return append(b, make([]byte, n)...)
}

// The scanner finds each statement's end in the client's stream however it
// is split into chunks: a simple Query, or a Sync after an Execute; not a
// Sync after a Parse alone, nor a 'Q' byte inside a message body.
func TestMsgScanner(t *testing.T) {
	var stream []byte
	stream = append(stream, untyped(sslRequest, 0)...)
	stream = append(stream, untyped(196608, 30)...) // startup, protocol 3.0
	stream = append(stream, msg('P', 40)...)        // Parse
	stream = append(stream, msg('S', 0)...)         // Sync: no statement ran
	stream = append(stream, msg('B', 20)...)        // Bind
	stream = append(stream, msg('E', 5)...)         // Execute
	stream = append(stream, msg('S', 0)...)         // Sync: statement 1
	q := msg('Q', 12)
	copy(q[5:], "QQQQQQQQQQQ")              // 'Q' bytes inside the body are not messages
	stream = append(stream, q...)           // statement 2
	stream = append(stream, msg('X', 0)...) // Terminate
	for _, size := range []int{1, 2, 3, 5, 7, 64, len(stream)} {
		var s msgScanner
		n := 0
		for i := 0; i < len(stream); i += size {
			n += len(s.feed(stream[i:min(i+size, len(stream))]))
		}
		if n != 2 {
			t.Errorf("chunks of %d: %d statements, want 2", size, n)
		}
	}
}
