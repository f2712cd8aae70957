package eventstore

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	// Host is the client listen address (default 127.0.0.1).
	Host string
	// Port is the client port; 0 picks a free one (read it back from Server.Addr).
	Port int
	// StoreDir holds JetStream's file storage; required.
	StoreDir string
	// ServerName names the server (default "agentid").
	ServerName string
	// SyncAlways fsyncs every write before acknowledging it; slower, but an acknowledged event
	// survives a power loss.
	SyncAlways bool
	// Logger receives the server's log; nil keeps the server silent.
	Logger *slog.Logger
	// MaxStore is the most bytes JetStream keeps on disk; the streams' MaxBytes are reserved
	// against it, and a stream whose limit does not fit is refused ("insufficient storage
	// resources"). 0 lets the server take 75 % of the disk's free space at start.
	MaxStore int64
	// Cluster joins the server to a JetStream cluster when Cluster.Name is set; ServerName must then
	// differ between the cluster's servers.
	Cluster EmbeddedCluster
	// NkeyUsers, when set, are the only clients the server accepts (each with its permissions, see
	// pkg/natsauth); an anonymous connect is refused. Nil accepts any client (tests).
	NkeyUsers []*server.NkeyUser
}

// EmbeddedCluster configures the routes of a clustered embedded server.
type EmbeddedCluster struct {
	// Name is the cluster's name, the same on all its servers; empty runs a single server.
	Name string
	// Port is the route port on Host; 0 picks a free one (read it back from Server.ClusterAddr).
	Port int
	// Routes are the route URLs (nats-route://host:port) of all the cluster's servers, this one
	// included: JetStream sizes its first meta group from their number.
	Routes []string
}

// embeddedStartTimeout bounds how long RunEmbeddedServer waits for the server to accept clients.
const embeddedStartTimeout = 30 * time.Second

// RunEmbeddedServer starts a nats-server with JetStream file storage in this process and waits until
// it accepts connections. Stop it with Shutdown and WaitForShutdown.
func RunEmbeddedServer(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("eventstore: embedded server: StoreDir is required")
	}
	if cfg.MaxStore < 0 {
		return nil, fmt.Errorf("eventstore: embedded server: MaxStore %d is negative", cfg.MaxStore)
	}
	opts := &server.Options{
		ServerName:        cfg.ServerName,
		Host:              cfg.Host,
		Port:              cfg.Port,
		JetStream:         true,
		StoreDir:          cfg.StoreDir,
		SyncAlways:        cfg.SyncAlways,
		NoSigs:            true,
		JetStreamMaxStore: cfg.MaxStore,
		NoLog:             cfg.Logger == nil,
		Nkeys:             cfg.NkeyUsers,
	}
	if cfg.NkeyUsers != nil && len(cfg.NkeyUsers) == 0 {
		return nil, errors.New("eventstore: embedded server: NkeyUsers is empty: no client could connect")
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	if opts.ServerName == "" {
		opts.ServerName = "agentid"
	}
	if cfg.Cluster.Name != "" {
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster.Name, Host: opts.Host, Port: cfg.Cluster.Port}
		if opts.Cluster.Port == 0 {
			opts.Cluster.Port = server.RANDOM_PORT
		}
		for _, r := range cfg.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("eventstore: embedded server: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	for _, port := range []int{opts.Port, opts.Cluster.Port} {
		if port > 0 { // fail fast: the server itself would wait out the whole timeout
			ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, strconv.Itoa(port)))
			if err != nil {
				return nil, fmt.Errorf("eventstore: embedded server: %w", err)
			}
			_ = ln.Close()
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("eventstore: embedded server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(slogAdapter{cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(embeddedStartTimeout) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("eventstore: embedded server on %s:%d not ready after %s", opts.Host, opts.Port, embeddedStartTimeout)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("eventstore: embedded server started without JetStream")
	}
	return ns, nil
}

// slogAdapter routes nats-server logging to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
