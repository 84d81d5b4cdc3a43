// Package frameworks tests pgsession end to end behind the routers of the
// web frameworks Go teams use: net/http's ServeMux, chi, gorilla/mux and
// echo v4 (gin has its adapter and tests in the module ginsession). Each is
// one entry of the table in frameworks_test.go, mounting the scenario's
// application (internal/frameworktest) the framework's way: pgsession's
// middleware around every route, and a route group behind a login check.
//
// It lives in the examples module so that no framework enters the root
// module's graph.
package frameworks
