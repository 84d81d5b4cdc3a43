package pgstore

// OwnsTCPConn is ownsTCPConn, for tests.
var OwnsTCPConn = ownsTCPConn
