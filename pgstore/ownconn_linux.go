package pgstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ownsTCPConn reports whether this process holds an established TCP
// connection from local to remote: a socket listed in /proc/self/net/tcp
// or tcp6 with those ends whose inode is one of /proc/self/fd. Any doubt
// (an unreadable file, a line it cannot parse) is a no.
func ownsTCPConn(local, remote netip.AddrPort) bool {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			if len(fields) < 10 || fields[3] != "01" { // 01: ESTABLISHED
				continue
			}
			l, ok1 := parseProcAddr(fields[1])
			r, ok2 := parseProcAddr(fields[2])
			if ok1 && ok2 && l == local && r == remote {
				inodes[fields[9]] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			return true
		}
	}
	return false
}

// parseProcAddr parses an address of /proc/net/tcp{,6}: the address in hex
// as 32-bit words in the host's byte order, a colon, the
// port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(host)
	p, perr := strconv.ParseUint(port, 16, 16)
	if err != nil || perr != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(raw); i += 4 { // each word to network byte order
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), true
}

// unixPeersArePostmaster reports whether the PostgreSQL backend of PID
// backendPID (pg_backend_pid(), which started at backendStart, Unix
// seconds) is a child of the process at the other end of every connected
// Unix stream socket of this process, of which there is at least one.
// The caller has checked that its connection, held open during the call,
// is a Unix socket on both sides.
//
// Why that proves the connection direct: SO_PEERCRED of a connected Unix
// socket gives the process that was listening when connect() ran, fixed
// for the socket's life. PostgreSQL's postmaster listens and forks one
// backend per connection, so a direct connection's peer is the postmaster,
// the backend's parent. A pooler (PgBouncer, Odyssey, pgpool-II, pgcat)
// listens on its own socket: the peer of a connection to it is the pooler,
// while the backend that answers is the child of the postmaster, a process
// the pooler never is (a backend's parent is the postmaster and no other
// process; pgpool-II's forked children share their parent's PID as peer,
// not the postmaster's). So a pooler can never pass. The socket of the
// probe's connection cannot be told apart from this process's other Unix
// sockets here (database/sql does not hand out its file descriptor), hence
// "every": a process that also holds another Unix stream connection (to a
// pooler, to a socket of its own, an accepted client on a Unix listener) is
// simply not proven, and takes the pooler-safe mode. Listening sockets are
// not connections and are skipped; a socket not yet connected has no peer
// (PID 0) and fails the proof.
//
// The backend's parent is read from /proc/<pid>/stat, which names the PID
// in this process's PID namespace: a server in another namespace (a
// container) reports a PID that is another process here, or none. Its
// start time must then match backendStart within a few seconds, else
// nothing is proven; and with the postmaster invisible here, SO_PEERCRED
// reports PID 0. Any doubt (a file that cannot be read or parsed, a failed
// getsockopt) is a no.
func unixPeersArePostmaster(backendPID int, backendStart float64) bool {
	ppid, start, ok := procParentAndStart(backendPID)
	if !ok || ppid <= 1 || math.Abs(start-backendStart) > 5 {
		return false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false
	}
	n := 0
	for _, e := range fds {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue // closed meanwhile, or not a socket
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			return false
		}
		domain, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
		if err == syscall.EBADF || err == syscall.ENOTSOCK { //nolint:errorlint // syscall.Errno
			continue // closed (and maybe reused) since the listing
		}
		if err != nil {
			return false
		}
		if domain != syscall.AF_UNIX {
			continue
		}
		typ, err1 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
		listening, err2 := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
		if err1 != nil || err2 != nil {
			return false
		}
		if typ != syscall.SOCK_STREAM || listening != 0 {
			continue // datagrams (the system log) and listeners carry no connection
		}
		cred, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err != nil || int(cred.Pid) != ppid {
			return false
		}
		n++
	}
	return n > 0
}

// procParentAndStart returns the parent PID of process pid and when it
// started (Unix seconds), from /proc.
func procParentAndStart(pid int) (ppid int, start float64, ok bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is the state (field 3), fields[1] the parent (field 4),
	// fields[19] the start time in clock ticks after boot (field 22).
	if len(fields) < 20 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(fields[1])
	ticks, err2 := strconv.ParseUint(fields[19], 10, 64)
	boot, err3 := bootTime()
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return ppid, boot + float64(ticks)/userHZ, true
}

// userHZ is the unit of /proc's clock ticks (USER_HZ): 100 on every Linux
// architecture Go supports.
const userHZ = 100

// bootTime returns when the system booted (Unix seconds): btime of
// /proc/stat.
func bootTime() (float64, error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no btime in /proc/stat")
}
