// Package cli implements agentctl: the commands, their output formats and the saved login session.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/tlsx"
)

// globals are the flags every command shares.
type globals struct {
	server    string
	tenant    string
	output    string
	configDir string
	ca        string // --ca: CA file the server's certificate is verified against (implies TLS)
	tls       bool   // --tls: TLS verified against the system roots
	stdout    io.Writer
	stderr    io.Writer
}

// Execute runs agentctl with args and returns the process exit code.
func Execute(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", describe(err)+tlsHint(err))
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			return coded.ExitCode()
		}
		return 1
	}
	return 0
}

// describe turns a gRPC status into "Code: message (REASON)" for humans.
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := fmt.Sprintf("%s: %s", st.Code(), st.Message())
	for _, d := range st.Details() {
		if r, ok := d.(interface{ GetReason() string }); ok && r.GetReason() != "" {
			msg += " (" + r.GetReason() + ")"
		}
	}
	if after := errs.FromStatus(err).RetryAfter; after > 0 {
		msg += "; retry in " + after.String()
	}
	return msg
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "agentctl",
		Short:         "Operate agentid: tenants, agents, tokens and events",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch g.output {
			case "table", "json", "yaml":
			default:
				return fmt.Errorf("-o %q: want table, json or yaml", g.output)
			}
			return nil
		},
	}
	def := envOr("AGENTID_SERVER", "")
	root.PersistentFlags().StringVar(&g.server, "server", def, "gRPC address of agentid (default: the logged-in server, else 127.0.0.1:7070; env AGENTID_SERVER)")
	root.PersistentFlags().StringVar(&g.tenant, "tenant", envOr("AGENTID_TENANT", ""), "tenant for commands that take bare ids (default: the session's, else default; env AGENTID_TENANT)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentFlags().StringVar(&g.configDir, "config-dir", "", "where the login session is kept (default $AGENTID_CONFIG_DIR, else the user config dir)")
	root.PersistentFlags().StringVar(&g.ca, "ca", envOr("AGENTID_CA", ""), "connect over TLS, verifying the server against this CA file (PEM) (default: the logged-in session's; env AGENTID_CA)")
	root.PersistentFlags().BoolVar(&g.tls, "tls", false, "connect over TLS, verifying the server against the system roots (default: the logged-in session's)")
	root.AddCommand(newLoginCmd(g), newTenantsCmd(g), newAgentsCmd(g), newClientsCmd(g), newTokenCmd(g), newTokensCmd(g), newEventsCmd(g),
		newApprovalsCmd(g))
	root.AddCommand(newAlertsCmd(g), newMonitorCmd(g))
	root.AddCommand(newIncidentsCmd(g))
	root.AddCommand(newKeysCmd(g))
	root.AddCommand(newReviewsCmd(g))
	root.AddCommand(newRotationsCmd(g))
	root.AddCommand(newDiscoverCmd(g))
	root.AddCommand(newDirectoryCmd(g))
	root.AddCommand(newValidateCmd(g), newPlanCmd(g), newApplyCmd(g))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// connect opens an authenticated gRPC connection using the saved session.
func (g *globals) connect(ctx context.Context) (*grpc.ClientConn, *session, error) {
	s, err := loadSession(g.configPath())
	if err != nil {
		return nil, nil, err
	}
	if g.server != "" {
		s.Server = g.server
	}
	if s.Server == "" {
		s.Server = "127.0.0.1:7070"
	}
	cred, err := authn.LoadCredentialFile(s.CredentialFile)
	if err != nil {
		return nil, nil, fmt.Errorf("the session's credential %s: %w (run agentctl login again)", s.CredentialFile, err)
	}
	if g.ca != "" || g.tls {
		s.CAFile, s.TLS = g.ca, true
	}
	conn, err := dialServer(ctx, s.Server, s.CAFile, s.TLS, cred)
	if err != nil {
		return nil, nil, err
	}
	return conn, s, nil
}

// dialServer connects to the agentid gRPC address with cred's tokens: over TLS when caFile is set
// (verified against it) or useTLS (the system roots); in plaintext only to a loopback address. The
// credential's token endpoint is verified the same way and must be https:// off loopback.
func dialServer(ctx context.Context, server, caFile string, useTLS bool, cred *authn.Credential) (*grpc.ClientConn, error) {
	var tlsConfig *tls.Config
	if caFile != "" || useTLS {
		var err error
		if tlsConfig, err = tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: caFile}); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
	} else if !tlsx.IsLoopbackTarget(server) {
		return nil, fmt.Errorf("refusing to send a token in plaintext to %s, which is not a loopback address: connect over TLS with --ca FILE (the CA of the server's certificate) or --tls (system roots)", server)
	}
	if err := authn.CheckIssuerURL(cred.TokenURL); err != nil {
		return nil, fmt.Errorf("the credential's token_url: %w", err)
	}
	ts := cred.TokenSource(service.WithHTTPClient(ctx, tlsConfig))
	conn, err := grpcx.DialTLS(server, tlsConfig, authn.BearerCredentials(server, ts))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", server, err)
	}
	return conn, nil
}

// tokenContext returns ctx carrying the HTTP client for a token endpoint at tokenURL: verifying
// the CA of --ca (or --tls: the system roots; else the session's, if there is one). A plaintext
// http:// token endpoint off loopback is refused.
func (g *globals) tokenContext(ctx context.Context, tokenURL string) (context.Context, error) {
	if err := authn.CheckIssuerURL(tokenURL); err != nil {
		return nil, fmt.Errorf("the credential's token_url: %w", err)
	}
	caFile, useTLS := g.ca, g.ca != "" || g.tls
	if !useTLS {
		if s, err := loadSession(g.configPath()); err == nil {
			caFile, useTLS = s.CAFile, s.TLS
		}
	}
	if !useTLS {
		return ctx, nil
	}
	tlsConfig, err := tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: caFile})
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	return service.WithHTTPClient(ctx, tlsConfig), nil
}

// tlsHint says what to do about an error caused by an untrusted server certificate (gRPC reports
// it only in its status message); "" for other errors.
func tlsHint(err error) string {
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	if errors.As(err, &verr) || errors.As(err, &uerr) || strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		return " (the server's certificate is not trusted: give its CA with --ca FILE)"
	}
	return ""
}

// tenantOr returns the --tenant flag, else the session's tenant, else "default".
func (g *globals) tenantOr(s *session) string {
	if g.tenant != "" {
		return g.tenant
	}
	if s != nil && s.Tenant != "" {
		return s.Tenant
	}
	return "default"
}

// agentName accepts a full resource name or a bare agent id.
func (g *globals) agentName(s *session, arg string) (string, error) {
	if strings.HasPrefix(arg, "tenants/") {
		parts := strings.Split(arg, "/")
		if len(parts) != 4 || parts[2] != "agents" || parts[1] == "" || parts[3] == "" {
			return "", fmt.Errorf("agent %q: want tenants/{tenant}/agents/{agent} or a bare agent id", arg)
		}
		return arg, nil
	}
	if arg == "" || strings.Contains(arg, "/") {
		return "", errors.New("agent: want tenants/{tenant}/agents/{agent} or a bare agent id")
	}
	return "tenants/" + g.tenantOr(s) + "/agents/" + arg, nil
}

// group is a command that only holds subcommands: an unknown subcommand is an error, not help.
func group(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// withAgent connects with the saved session, resolves the agent argument (a resource name or a bare
// id in the session's tenant) and runs fn.
func (g *globals) withAgent(ctx context.Context, arg string, fn func(conn *grpc.ClientConn, name string) error) error {
	conn, s, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	name, err := g.agentName(s, arg)
	if err != nil {
		return err
	}
	return fn(conn, name)
}
