package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// PprofConfig configures the optional profiling listener (net/http/pprof).
type PprofConfig struct {
	// Addr is the listen address (host:port); empty disables profiling.
	Addr string
	// AllowRemote permits an address that is not loopback. Profiles reveal memory contents and
	// timing of the process, so the default refuses anything but 127.0.0.0/8, ::1 and localhost.
	AllowRemote bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// CheckPprofAddr validates a profiling address: empty (off), or host:port whose host is loopback
// unless allowRemote. The error names the flag.
func CheckPprofAddr(addr string, allowRemote bool) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %q: not host:port", addr)
	}
	if allowRemote || strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--pprof-addr %q: not a loopback address (127.0.0.0/8, ::1, localhost); profiles expose process internals, set --pprof-allow-remote to serve them elsewhere", addr)
}

// PprofHandler serves the net/http/pprof endpoints under /debug/pprof/.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// PprofTask binds the profiling listener now (so a bad or busy address fails at start) and returns
// the task that serves it until ctx ends. With an empty Addr it returns nil and no error.
func PprofTask(cfg PprofConfig) (Task, net.Addr, error) {
	if cfg.Addr == "" {
		return nil, nil, nil
	}
	if err := CheckPprofAddr(cfg.Addr, cfg.AllowRemote); err != nil {
		return nil, nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--pprof-addr %q: %w", cfg.Addr, err)
	}
	srv := HTTPLimits{WriteTimeout: adminWriteTimeout}.server(PprofHandler(), nil, log)
	task := func(ctx context.Context) error {
		log.Warn("profiling endpoints are served (--pprof-addr)", "pprof_addr", lis.Addr().String())
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(lis) }()
		select {
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("pprof listener: %w", err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-errc
			return nil
		}
	}
	return task, lis.Addr(), nil
}
