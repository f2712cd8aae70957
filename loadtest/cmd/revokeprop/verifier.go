package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/natsauth"
)

// verifierMain runs one verifier process: a resource server that verifies bearer tokens offline
// (JWKS) with the push denylist, answering GET /verify with 204 or 401 and the refusal's reason. It
// prints "listening <addr>" once it accepts connections and "ready" once its denylist has caught up.
func verifierMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("revokeprop verifier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", nats.DefaultURL, "NATS server of the platform")
	natsNkey := fs.String("nats-nkey", "", "nkey seed file of the NATS verifier identity (agentid dev: <data-dir>/credentials/nats/verifier.nk)")
	issuerBase := fs.String("issuer-url", "http://127.0.0.1:8080", "issuer base URL (tenant issuers are {url}/t/{tenant})")
	listen := fs.String("listen", "127.0.0.1:0", "HTTP listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	natsOpts, err := natsauth.ClientOptions(*natsNkey, "")
	if err != nil {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return 2
	}
	nc, err := nats.Connect(*natsURL, append(natsOpts, nats.Name("revokeprop verifier"), nats.MaxReconnects(-1))...)
	if err != nil {
		fmt.Fprintf(stderr, "verifier: connect to NATS at %s: %v\n", *natsURL, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return 1
	}
	deny := authn.NewDenylist(authn.DenylistConfig{})
	feed, err := authn.NewRevocationFeed(authn.RevocationFeedConfig{JetStream: js, Denylist: deny, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return 1
	}
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: *issuerBase, Revocations: deny})
	if err != nil {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "verifier: listen on %s: %v\n", *listen, err)
		return 1
	}
	srv := &http.Server{Handler: verifyHandler(verifier), ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = feed.Run(ctx) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	go func() {
		if feed.Ready(ctx) == nil {
			fmt.Fprintln(stdout, "ready")
		}
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "verifier: %v\n", err)
		return 1
	}
	return 0
}

// verifyHandler answers GET /verify: 204 for a valid token, 401 with the reason for a refused one.
func verifyHandler(v authn.Verifier) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /verify", func(w http.ResponseWriter, r *http.Request) {
		raw := ""
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
			raw = h[7:]
		}
		if _, err := v.Verify(r.Context(), raw); err != nil {
			var e *errs.Error
			reason := "UNKNOWN"
			if errors.As(err, &e) {
				reason = e.Reason
			}
			http.Error(w, reason, http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
