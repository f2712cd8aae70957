package grpcx

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ServerTLS makes a server (NewServer's opts) serve TLS with cfg (see tlsx.NewServerConfig). A failed
// handshake is logged on log with the peer's address (a client that does not trust the certificate,
// one speaking plaintext, a port scan); log nil means slog.Default().
func ServerTLS(cfg *tls.Config, log *slog.Logger) grpc.ServerOption {
	if log == nil {
		log = slog.Default()
	}
	return grpc.Creds(&loggedTLS{TransportCredentials: credentials.NewTLS(cfg), log: log})
}

// loggedTLS logs the server handshakes that fail, which grpc-go only reports to its own logger.
type loggedTLS struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func (l *loggedTLS) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := l.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, io.EOF) { // a connection closed before a hello: a TCP probe
			lvl = slog.LevelDebug
		}
		l.log.Log(context.Background(), lvl, "gRPC TLS handshake failed", "peer", raw.RemoteAddr().String(), "error", err.Error())
	}
	return conn, info, err
}

func (l *loggedTLS) Clone() credentials.TransportCredentials {
	return &loggedTLS{TransportCredentials: l.TransportCredentials.Clone(), log: l.log}
}
