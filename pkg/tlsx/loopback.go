package tlsx

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// IsLoopbackHost reports whether host (a name or an IP literal, optionally in brackets) is a loopback
// address: 127.0.0.0/8, ::1 (also IPv4-mapped), "localhost" or a name under ".localhost" (RFC 6761).
// Unspecified addresses (0.0.0.0, ::) and the empty host are not loopback: they mean every interface.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return true
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// IsLoopbackAddr reports whether a host:port (or a bare host) is on a loopback address.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return IsLoopbackHost(host)
}

// IsLoopbackTarget reports whether a gRPC target ("host:port", "dns:///host:port",
// "passthrough:///host:port", "unix:path") reaches a loopback address. Unix sockets are local and count
// as loopback.
func IsLoopbackTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if scheme, rest, ok := strings.Cut(target, "://"); ok && !strings.Contains(scheme, "/") {
		// scheme://[authority]/endpoint: the endpoint names the server.
		_, endpoint, found := strings.Cut(rest, "/")
		if !found {
			return false
		}
		target = endpoint
	}
	return IsLoopbackAddr(target)
}

// IsLoopbackURL reports whether raw is an absolute URL whose host is a loopback address.
func IsLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Host != "" && IsLoopbackHost(u.Hostname())
}
