package pgsession

import (
	"hash/maphash"
	"sync"

	"github.com/pgsession/pgsession/backend"
)

// verifiedValues remembers the token values (cookie values and bearer
// tokens) that verified, or that the Manager signed, with what they carry,
// so that a client sending the same value again, as a browser does on
// every request, costs a hash and a comparison instead of an HMAC-SHA256,
// two base64 decodings and the SHA-256 of its key. Only values that
// verified enter it, so forged values can neither fill it nor hit it; a
// hit needs the very string that verified (compared in full). A Manager's
// hash keys never change, so an entry never goes stale: whether its session
// exists is still the backend's answer, on every request.
//
// It is a table of verifiedSlots slots, each holding one value in place,
// in verifiedShards shards that are allocated at their first use (at most
// about 4 MB). A value's slot is chosen by a hash of it with a seed of the
// Manager's own; a new value takes the slot of an older one. The table
// holds no pointers, so the garbage collector never scans it: a map of
// strings to credentials made every login's new token, live until evicted,
// cost each collection cycle more (a third of a login's CPU in a
// login-only load).
type verifiedValues struct {
	seed   maphash.Seed
	shards [verifiedShards]verifiedShard
}

const (
	verifiedShards   = 64
	slotsPerShard    = 256
	verifiedSlots    = verifiedShards * slotsPerShard // 16,384
	maxVerifiedValue = 160                            // a value is 144 bytes (148 for a long date); longer ones are not remembered
)

// verifiedShard is a shard of the table, locked on its own.
type verifiedShard struct {
	mu    sync.Mutex
	slots *[slotsPerShard]verifiedSlot // nil until the first value
}

// verifiedSlot is one remembered value and what it carries; n is 0 for an
// empty slot.
type verifiedSlot struct {
	n       uint8
	current bool
	value   [maxVerifiedValue]byte
	key     [keyLength]byte
	sid     SessionID
	id      backend.ID
}

func newVerifiedValues() *verifiedValues { return &verifiedValues{seed: maphash.MakeSeed()} }

// slot returns the shard and the index in it of value's slot.
func (v *verifiedValues) slot(value string) (*verifiedShard, int) {
	h := maphash.String(v.seed, value)
	return &v.shards[h%verifiedShards], int(h/verifiedShards) % slotsPerShard
}

// get returns what value carries, if it is remembered. The credential's key
// is the caller's own copy.
func (v *verifiedValues) get(value string) (credential, bool, bool) {
	if len(value) == 0 || len(value) > maxVerifiedValue {
		return credential{}, false, false
	}
	sh, i := v.slot(value)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.slots == nil {
		return credential{}, false, false
	}
	s := &sh.slots[i]
	if int(s.n) != len(value) || string(s.value[:s.n]) != value {
		return credential{}, false, false
	}
	return credential{key: append([]byte(nil), s.key[:]...), sid: s.sid, id: s.id}, s.current, true
}

// put remembers that value verified, carrying c, in place of the value
// that held its slot.
func (v *verifiedValues) put(value string, c credential, current bool) {
	if len(value) == 0 || len(value) > maxVerifiedValue || len(c.key) != keyLength {
		return
	}
	sh, i := v.slot(value)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.slots == nil {
		sh.slots = new([slotsPerShard]verifiedSlot)
	}
	s := &sh.slots[i]
	s.n, s.current, s.sid, s.id = uint8(len(value)), current, c.sid, c.id
	copy(s.value[:], value)
	copy(s.key[:], c.key)
}
