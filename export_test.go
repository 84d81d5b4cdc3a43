package pgsession

// OwnsTCPConn is ownsTCPConn, for tests.
var OwnsTCPConn = ownsTCPConn
