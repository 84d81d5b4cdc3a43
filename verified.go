package pgsession

import (
	"sync"
	"sync/atomic"
)

// maxVerified bounds how many verified values a Manager remembers: about
// 5 MB at most (a value is about 150 bytes).
const maxVerified = 1 << 14

// verifiedValues remembers the token values (cookie values and bearer
// tokens) that verified, with what they carry, so that a client sending the
// same value again, as a browser does on every request, costs one map
// lookup instead of an HMAC-SHA256, two base64 decodings and the SHA-256 of
// its key. Only values that verified enter it, so forged values can neither
// fill it nor hit it; a hit needs the very string that verified. A Manager's
// hash keys never change, so an entry never goes stale: whether its session
// exists is still the backend's answer, on every request. When it holds
// maxVerified values it starts afresh.
type verifiedValues struct {
	m atomic.Pointer[sync.Map] // value string -> verifiedValue
	n atomic.Int64             // values stored in m, roughly
}

// verifiedValue is what a value that verified carries.
type verifiedValue struct {
	c       credential
	current bool
}

func newVerifiedValues() *verifiedValues {
	v := new(verifiedValues)
	v.m.Store(new(sync.Map))
	return v
}

// get returns what value carries, if it verified before. The credential's
// key is shared with every other request that sent value: like every key
// in the package, it is never modified.
func (v *verifiedValues) get(value string) (credential, bool, bool) {
	e, ok := v.m.Load().Load(value)
	if !ok {
		return credential{}, false, false
	}
	vv := e.(verifiedValue)
	return vv.c, vv.current, true
}

// put remembers that value verified, carrying c.
func (v *verifiedValues) put(value string, c credential, current bool) {
	if v.n.Add(1) > maxVerified {
		v.m.Store(new(sync.Map))
		v.n.Store(1)
	}
	c.key = append([]byte(nil), c.key...)
	v.m.Load().Store(value, verifiedValue{c: c, current: current})
}
