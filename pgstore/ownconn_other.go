//go:build !linux

package pgstore

import "net/netip"

// ownsTCPConn proves nothing outside Linux: the backend then takes the
// modes that are correct behind a pooler (see driverstack.go).
func ownsTCPConn(local, remote netip.AddrPort) bool { return false }

// unixPeersArePostmaster proves nothing outside Linux (no SO_PEERCRED, no
// /proc): see ownconn_linux.go.
func unixPeersArePostmaster(backendPID int, backendStart float64) bool { return false }
