package pgstore

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strings"
)

// What the backend reads from a driver connection (database/sql's
// sql.Conn.Raw), beneath any wrapper, by reflection: this package imports
// neither pgx nor a wrapper, and must not (the root module depends on
// lib/pq, sqlx and securecookie only).

// driverConnInfo is what inspectDriverConn found.
type driverConnInfo struct {
	// transport is "unix" or "tcp": the type of the first network
	// connection found (*net.UnixConn, *net.TCPConn), nearest first; ""
	// if none was found.
	transport string
	// pgx only: pgxExec is pgx.QueryExecModeExec as a value of pgx's own
	// type (nil if unavailable, pgxWhy says why); pgxDefault is the
	// connection's default_query_exec_mode as pgx's String() names it ("" if
	// it could not be read).
	pgxExec    any
	pgxWhy     string
	pgxDefault string
}

var (
	typeUnixConn = reflect.TypeOf((*net.UnixConn)(nil))
	typeTCPConn  = reflect.TypeOf((*net.TCPConn)(nil))
	// pgx's root package and its stdlib, any major version from 5.
	pgxPackage    = regexp.MustCompile(`^github\.com/jackc/pgx/v([5-9]|[1-9][0-9])$`)
	pgxStdlib     = regexp.MustCompile(`^github\.com/jackc/pgx/v([5-9]|[1-9][0-9])/stdlib$`)
	pgxPgconn     = regexp.MustCompile(`^github\.com/jackc/pgx/v([5-9]|[1-9][0-9])/pgconn$`)
	maxInspected  = 512 // values looked at, at most
	maxInspectDep = 8   // and how deep
)

// pgxExecModeName is what pgx's QueryExecMode.String() returns for
// QueryExecModeExec: unnamed statements, parameters in one round trip.
const pgxExecModeName = "exec"

// inspectDriverConn walks the driver connection c, breadth first, through
// the fields of structs (exported or not: only types and plain values are
// read from unexported ones), pointers and interfaces, looking for the
// network connection and, with pgx, for pgx's *Conn. Methods are called on
// pgx's own types only (stdlib's Conn.Conn, pgx's Conn.Config and
// Conn.PgConn, pgconn's PgConn.Conn), never on a wrapper's.
//
// It stops as soon as it has what the family needs (the network
// connection; with pgx, pgx's types too), so that it reads as little of a
// wrapper's own state as it can.
func inspectDriverConn(c any, family driverFamily) driverConnInfo {
	var info driverConnInfo
	var modeType reflect.Type // pgx.QueryExecMode
	type node struct {
		v     reflect.Value
		depth int
	}
	queue := []node{{reflect.ValueOf(c), 0}}
	seen := map[uintptr]bool{}
	for n := 0; len(queue) > 0 && n < maxInspected; n++ {
		if info.transport != "" && (family != familyPGX || modeType != nil && info.pgxDefault != "") {
			break
		}
		v, depth := queue[0].v, queue[0].depth
		queue = queue[1:]
		if !v.IsValid() {
			continue
		}
		for v.Kind() == reflect.Interface && !v.IsNil() {
			v = v.Elem()
		}
		t := v.Type()
		if info.transport == "" {
			switch t {
			case typeUnixConn:
				info.transport = "unix"
			case typeTCPConn:
				info.transport = "tcp"
			}
		}
		if t == typeUnixConn || t == typeTCPConn ||
			v.Kind() != reflect.Pointer && v.Kind() != reflect.Struct || depth >= maxInspectDep {
			continue // not inside a network connection: the poller's state
		}
		if v.Kind() == reflect.Pointer {
			if v.IsNil() || seen[v.Pointer()] {
				continue
			}
			seen[v.Pointer()] = true
			elem := t.Elem()
			switch {
			case pgxStdlib.MatchString(elem.PkgPath()) && elem.Name() == "Conn":
				queue = append(queue, node{callNoArgs(v, "Conn"), depth + 1})
			case pgxPackage.MatchString(elem.PkgPath()) && elem.Name() == "Conn":
				if modeType == nil {
					modeType = pgxModeType(t)
				}
				if info.pgxDefault == "" && modeType != nil {
					cfg := callNoArgs(v, "Config")
					if !cfg.IsValid() {
						// Reached through a wrapper's unexported field: no
						// call, but its (unexported) config can be read.
						cfg = v.Elem().FieldByName("config")
					}
					if cfg.IsValid() && cfg.Kind() == reflect.Pointer && !cfg.IsNil() && cfg.Elem().Kind() == reflect.Struct {
						if m := cfg.Elem().FieldByName("DefaultQueryExecMode"); m.IsValid() && m.Type() == modeType {
							info.pgxDefault = modeName(modeType, m.Int())
						}
					}
				}
				queue = append(queue, node{callNoArgs(v, "PgConn"), depth + 1})
			case pgxPgconn.MatchString(elem.PkgPath()) && elem.Name() == "PgConn":
				queue = append(queue, node{callNoArgs(v, "Conn"), depth + 1})
			}
			queue = append(queue, node{v.Elem(), depth + 1})
			continue
		}
		if fields, ok := pgxFields(t); ok {
			// pgx's own structs: only the field on the way to the network
			// connection (a background reader may write the others).
			for _, name := range fields {
				queue = append(queue, node{v.FieldByName(name), depth + 1})
			}
			continue
		}
		for i := range v.NumField() {
			f := v.Field(i)
			switch f.Kind() {
			case reflect.Pointer, reflect.Interface, reflect.Struct:
				queue = append(queue, node{f, depth + 1})
			}
		}
	}
	switch {
	case modeType == nil:
		info.pgxWhy = "pgx's connection was not found beneath the database/sql driver connection"
	default:
		for i := range int64(64) {
			if modeName(modeType, i) == pgxExecModeName {
				info.pgxExec = modeValue(modeType, i).Interface()
				break
			}
		}
		if info.pgxExec == nil {
			info.pgxWhy = fmt.Sprintf("no value of %s names itself %q", modeType, pgxExecModeName)
		}
	}
	return info
}

// callNoArgs calls v's method name, which takes no argument and returns one
// value, and returns that value; the zero Value if v has no such method or
// was reached through an unexported field (reflection forbids the call).
func callNoArgs(v reflect.Value, name string) reflect.Value {
	if !v.CanInterface() {
		return reflect.Value{}
	}
	m := v.MethodByName(name)
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return reflect.Value{}
	}
	return m.Call(nil)[0]
}

// pgxModeType returns pgx's QueryExecMode type from the type of *pgx.Conn
// (its Config method returns *ConnConfig, whose DefaultQueryExecMode field
// has that type), or nil if the types are not shaped so.
func pgxModeType(conn reflect.Type) reflect.Type {
	m, ok := conn.MethodByName("Config")
	if !ok || m.Type.NumOut() != 1 || m.Type.Out(0).Kind() != reflect.Pointer || m.Type.Out(0).Elem().Kind() != reflect.Struct {
		return nil
	}
	f, ok := m.Type.Out(0).Elem().FieldByName("DefaultQueryExecMode")
	if !ok || f.Type.Name() != "QueryExecMode" || !pgxPackage.MatchString(f.Type.PkgPath()) {
		return nil
	}
	switch f.Type.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return nil
	}
	if !f.Type.Implements(reflect.TypeOf((*fmt.Stringer)(nil)).Elem()) {
		return nil
	}
	return f.Type
}

// modeValue returns the value i of pgx's QueryExecMode type t.
func modeValue(t reflect.Type, i int64) reflect.Value {
	v := reflect.New(t).Elem()
	v.SetInt(i)
	return v
}

// modeName returns what pgx calls its mode i of type t.
func modeName(t reflect.Type, i int64) string {
	return modeValue(t, i).Interface().(fmt.Stringer).String()
}

// pgxFields returns, for a struct type of pgx's, the fields that lead from
// it towards the network connection, and whether t is pgx's.
func pgxFields(t reflect.Type) ([]string, bool) {
	switch p := t.PkgPath(); {
	case pgxStdlib.MatchString(p) && t.Name() == "Conn":
		return []string{"conn"}, true
	case pgxPackage.MatchString(p) && t.Name() == "Conn":
		return []string{"pgConn"}, true
	case pgxPgconn.MatchString(p) && t.Name() == "PgConn":
		return []string{"conn"}, true
	case strings.HasPrefix(p, "github.com/jackc/"):
		return nil, true
	}
	return nil, false
}
