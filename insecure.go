package pgsession

import (
	"net"
	"net/http"
	"strings"
)

// warnInsecureTransport logs, once per Manager and at Warn level, when the
// response to r, which sets the session cookie, sets a Secure one that the
// browser will not keep: r came over plain HTTP (r.TLS is nil) to a host that is not loopback
// (browsers accept Secure cookies over plain HTTP only from localhost), with
// no sign of a TLS-terminating proxy in front ("X-Forwarded-Proto: https" or
// "Forwarded: proto=https"). Browsers drop such cookies silently, so a login
// seems to succeed and the user stays logged out while rows pile up.
func (m *Manager) warnInsecureTransport(r *http.Request) {
	if m.cfg.Cookie.Insecure || r.TLS != nil || m.insecureWarned.Load() ||
		isLoopbackHost(r.Host) || forwardedHTTPS(r.Header) {
		return
	}
	if !m.insecureWarned.CompareAndSwap(false, true) {
		return
	}
	m.cfg.Logger.WarnContext(r.Context(), "pgsession: a Secure session cookie was sent over plain HTTP to a non-local host; "+
		"browsers drop it, so users stay logged out. Serve HTTPS, have the TLS-terminating proxy set \"X-Forwarded-Proto: https\", "+
		"or, for development only, set Config.Cookie.Insecure (logged once)",
		"host", r.Host, "method", r.Method, "path", r.URL.Path)
}

// isLoopbackHost reports whether host (a Host header, with or without a port)
// is one browsers treat as secure over plain HTTP: localhost, *.localhost,
// 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// forwardedHTTPS reports whether a proxy says the client's request used
// HTTPS, in X-Forwarded-Proto or in the proto parameter of Forwarded
// (RFC 7239).
func forwardedHTTPS(h http.Header) bool {
	for _, v := range h.Values("X-Forwarded-Proto") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "https") {
				return true
			}
		}
	}
	for _, v := range h.Values("Forwarded") {
		for elem := range strings.SplitSeq(v, ",") {
			for pair := range strings.SplitSeq(elem, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "proto") && strings.EqualFold(strings.Trim(val, `"`), "https") {
					return true
				}
			}
		}
	}
	return false
}
