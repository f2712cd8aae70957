// Command resourceserver is a small HTTP resource server protected by the pkg/authn verifier SDK:
// it serves GET /files/{name} (scope files.read) and PUT /files/{name} (scope files.write) to
// tokens of the platform's issuer, refuses revoked tokens within milliseconds through the
// REVOCATIONS stream (--nats), and reports every access decision to the monitor (--monitor).
//
//	go run ./examples/resourceserver --issuer http://127.0.0.1:8080 --audience https://files.example \
//	  --credentials files-rs.json --nats nats://127.0.0.1:4222 --nats-nkey .agentid/credentials/nats/verifier.nk \
//	  --monitor 127.0.0.1:7070
//
// Beyond loopback the issuer must be https:// and the monitor is reached over TLS: --ca names the
// CA file their certificates are verified against.
//
// Once it accepts requests it prints "listening on ADDR" on stdout.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/tlsx"
)

type config struct {
	issuer, audience, credentials, natsURL, natsNkey, monitor, listen, tenant, publicURL, caFile string
	introspect                                                                                   bool
	introspectTTL                                                                                time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.issuer, "issuer", "http://127.0.0.1:8080", "the issuer's public base URL (tokens of {issuer}/t/{tenant} are accepted)")
	flag.StringVar(&cfg.audience, "audience", "", "this server's URL: the audience tokens must carry (required)")
	flag.StringVar(&cfg.credentials, "credentials", "", "this server's own credential file (for the monitor and introspection)")
	flag.StringVar(&cfg.natsURL, "nats", "", "NATS URL of the event store: refuse revoked tokens as soon as they are revoked")
	flag.StringVar(&cfg.natsNkey, "nats-nkey", "", "nkey seed file of the NATS verifier identity (agentid dev: <data-dir>/credentials/nats/verifier.nk)")
	flag.StringVar(&cfg.monitor, "monitor", "", "gRPC address of the monitor: report every access decision (needs --credentials)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8090", "address to listen on (port 0 picks a free one)")
	flag.StringVar(&cfg.tenant, "tenant", "", "accept only tokens of this tenant (default: the credential's tenant, else any)")
	flag.StringVar(&cfg.publicURL, "public-url", "", "scheme and host clients use, for DPoP proofs (default: the request's Host)")
	flag.BoolVar(&cfg.introspect, "introspect", false, "verify tokens through the issuer's introspection endpoint instead of JWKS (needs --credentials)")
	flag.StringVar(&cfg.caFile, "ca", "", "CA file (PEM) the issuer's and the monitor's certificates are verified against (default: the system roots for https://; plaintext only to loopback)")
	flag.DurationVar(&cfg.introspectTTL, "introspect-cache", 10*time.Second, "how long a positive introspection answer is reused (0 disables, at most 30s)")
	flag.Parse()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("resource server failed", "error", err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, logger *slog.Logger, stdout io.Writer) error {
	if cfg.audience == "" {
		return errors.New("--audience is required (this server's URL, e.g. https://files.example)")
	}
	var cred *authn.Credential
	if cfg.credentials != "" {
		c, err := authn.LoadCredentialFile(cfg.credentials)
		if err != nil {
			return err
		}
		cred = c
		if cfg.tenant == "" {
			cfg.tenant = c.Tenant
		}
	}

	var clientTLS *tls.Config
	if cfg.caFile != "" {
		c, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: cfg.caFile})
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		clientTLS = c
	}
	httpClient := service.HTTPClient(clientTLS)

	var verifier authn.Verifier
	var feed *authn.RevocationFeed
	if cfg.introspect {
		if cred == nil {
			return errors.New("--introspect needs --credentials")
		}
		v, err := authn.NewIntrospectionVerifier(authn.IntrospectionVerifierConfig{
			Credential: cred, Audience: cfg.audience, CacheTTL: cfg.introspectTTL, HTTPClient: httpClient,
		})
		if err != nil {
			return err
		}
		verifier = v
	} else {
		vcfg := authn.JWKSVerifierConfig{IssuerBaseURL: cfg.issuer, Audience: cfg.audience, HTTPClient: httpClient}
		if cfg.natsURL != "" {
			// The verifier identity reads the REVOCATIONS stream and nothing else (pkg/natsauth).
			natsOpts, err := natsauth.ClientOptions(cfg.natsNkey, "")
			if err != nil {
				return err
			}
			nc, err := nats.Connect(cfg.natsURL, append(natsOpts, nats.Name("resourceserver"), nats.MaxReconnects(-1))...)
			if err != nil {
				return fmt.Errorf("connect to NATS %s: %w", cfg.natsURL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			deny := authn.NewDenylist(authn.DenylistConfig{})
			if feed, err = authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: js, Denylist: deny, Logger: logger}); err != nil {
				return err
			}
			vcfg.Revocations = deny
		}
		v, err := authn.NewJWKSVerifier(vcfg)
		if err != nil {
			return err
		}
		verifier = v
	}

	opts := []authn.ServerOption{authn.WithServerLogger(logger), authn.WithReportedAudience(cfg.audience), authn.WithRealm(cfg.audience)}
	if cfg.tenant != "" {
		opts = append(opts, authn.WithAllowedTenants(cfg.tenant))
	}
	if cfg.publicURL != "" {
		opts = append(opts, authn.WithPublicURL(cfg.publicURL))
	}
	var reporter *authn.AccessReporter
	if cfg.monitor != "" {
		if cred == nil {
			return errors.New("--monitor needs --credentials")
		}
		ts := cred.TokenSource(service.WithHTTPClient(ctx, clientTLS))
		conn, err := grpcx.DialTLS(cfg.monitor, clientTLS, authn.BearerCredentials(cfg.monitor, ts))
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close() }()
		if reporter, err = authn.NewAccessReporter(authn.AccessReporterConfig{Tenant: cred.Tenant, Conn: conn, Logger: logger}); err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := reporter.Close(cctx); err != nil {
				logger.Warn("access events not all reported", "error", err.Error())
			}
		}()
		opts = append(opts, authn.WithAccessRecorder(reporter))
	}

	var wg sync.WaitGroup
	if feed != nil {
		fctx, cancel := context.WithCancel(ctx)
		defer func() { cancel(); wg.Wait() }()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := feed.Run(fctx); err != nil {
				logger.Error("revocation feed stopped", "error", err.Error())
			}
		}()
		if err := feed.Ready(ctx); err != nil {
			return err
		}
	}

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	handler := authn.Middleware(verifier, opts...)(newFiles().routes())
	if feed != nil {
		// Not ready while revocations may be missing (NATS gone, consumer stalled).
		mux := http.NewServeMux()
		mux.Handle("GET /readyz", feed.ReadinessHandler(authn.DefaultRevocationMaxAge))
		mux.Handle("/", handler)
		handler = mux
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	_, _ = fmt.Fprintf(stdout, "listening on %s\n", lis.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// files is an in-memory file store.
type files struct {
	mu    sync.RWMutex
	files map[string][]byte
}

func newFiles() *files {
	return &files{files: map[string][]byte{"hello.txt": []byte("hello from the resource server\n")}}
}

const maxFileBytes = 1 << 20

// routes maps the file API; its scopes are named resource.action, as the registry requires of the
// scopes an agent may be granted.
func (f *files) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /files/{name}", authn.RequireScopes("files.read")(http.HandlerFunc(f.get)))
	mux.Handle("PUT /files/{name}", authn.RequireScopes("files.write")(http.HandlerFunc(f.put)))
	return mux
}

func (f *files) get(w http.ResponseWriter, r *http.Request) {
	f.mu.RLock()
	data, ok := f.files[r.PathValue("name")]
	f.mu.RUnlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	authn.Report(r.Context()).AddRows(1)
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (f *files) put(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFileBytes))
	if err != nil {
		http.Error(w, "file too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	f.mu.Lock()
	f.files[r.PathValue("name")] = data
	f.mu.Unlock()
	authn.Report(r.Context()).AddRows(1)
	w.WriteHeader(http.StatusNoContent)
}
