package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/service"
	"github.com/agentid/agentid/pkg/tlsx"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func newLoginCmd(g *globals) *cobra.Command {
	var dev bool
	var dataDir, credFile string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in with a service credential (--dev: the bootstrap admin of a local agentid dev)",
		Long: `login remembers which credential agentctl signs its requests with. With --dev it uses the
bootstrap admin credential that "agentid dev" wrote to its data directory: a private key of a platform
service identity, exchanged for a short-lived token at our own issuer on every command.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case dev && credFile != "":
				return errors.New("--dev and --credentials are exclusive")
			case dev:
				credFile = filepath.Join(dataDir, "credentials", "bootstrap-admin.json")
			case credFile == "":
				return errors.New("say which credential to use: --dev or --credentials FILE")
			}
			abs, err := filepath.Abs(credFile)
			if err != nil {
				return err
			}
			cred, err := authn.LoadCredentialFile(abs)
			if err != nil {
				return fmt.Errorf("credential %s: %w", abs, err)
			}
			server := g.server
			if server == "" {
				server = "127.0.0.1:7070"
			}
			caFile := g.ca
			if caFile != "" {
				if caFile, err = filepath.Abs(caFile); err != nil {
					return err
				}
			}
			useTLS := caFile != "" || g.tls
			conn, err := dialServer(cmd.Context(), server, caFile, useTLS, cred)
			if err != nil {
				return err
			}
			var tlsConfig *tls.Config
			if useTLS {
				if tlsConfig, err = tlsx.NewClientConfig(tlsx.ClientOptions{CAFile: caFile}); err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
			}
			tok, err := cred.TokenSource(service.WithHTTPClient(cmd.Context(), tlsConfig)).Token()
			if err != nil {
				return fmt.Errorf("get a token from %s: %w", cred.TokenURL, err)
			}
			defer conn.Close()
			// Prove the token is accepted by the API before remembering the session.
			tenant := g.tenant
			if tenant == "" {
				tenant = cred.Tenant
				if tenant == authn.SystemTenant {
					tenant = "default"
				}
			}
			if _, err := registryv1.NewRegistryServiceClient(conn).GetTenant(cmd.Context(),
				&registryv1.GetTenantRequest{Name: "tenants/" + tenant}); err != nil {
				return fmt.Errorf("check the session against %s: %s", server, describe(err))
			}
			s := &session{Server: server, Tenant: tenant, CredentialFile: abs,
				Principal: cred.Tenant + "/" + cred.ClientID, LoginTime: time.Now().UTC(), CAFile: caFile, TLS: useTLS}
			if err := saveSession(g.configPath(), s); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "logged in to %s as %s (token expires %s)\n", server, s.Principal,
				tok.Expiry.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().BoolVar(&dev, "dev", false, "use the bootstrap admin credential of a local `agentid dev`")
	cmd.Flags().StringVar(&dataDir, "data-dir", ".agentid", "data directory of `agentid dev` (with --dev)")
	cmd.Flags().StringVar(&credFile, "credentials", "", "credential file of a service identity")
	return cmd
}
