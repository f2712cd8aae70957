package dev

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/agentid/agentid/pkg/natsauth"
)

// NATSUsersFile is the name of the nats-server configuration fragment `agentid secrets nats` writes.
const NATSUsersFile = "users.conf"

// newSecretsCmd is `agentid secrets`: the secrets of a deployment that openssl cannot make.
func newSecretsCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Make the secrets of a deployment (deploy/secrets/generate.sh runs it)",
	}
	var out string
	var tenants []string
	natsCmd := &cobra.Command{
		Use:   "nats --out DIR [--tenant TENANT]...",
		Short: "Write an nkey seed per NATS identity and the nats-server users configuration",
		Long: `Writes into DIR an nkey seed file (mode 0600) for every NATS identity of the platform — admin,
registry, issuer, policy, monitor, lifecycle, verifier — and for the read-only subscriber of each
--tenant (subscriber-<tenant>.nk), keeping the seeds that exist, and then ` + NATSUsersFile + `: the
nats-server authorization block with their public keys and least-privilege permissions, to include
from nats.conf. Give each service its own seed (--nats-nkey); the seeds never go to the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out: the directory to write the seeds and %s into is required", NATSUsersFile)
			}
			users, err := natsauth.LoadOrCreateUsers(out, tenants...)
			if err != nil {
				return err
			}
			conf := filepath.Join(out, NATSUsersFile)
			if err := natsauth.WriteServerConfigFile(conf, users); err != nil {
				return fmt.Errorf("write %s: %w", conf, err)
			}
			for _, u := range users {
				fmt.Fprintf(stdout, "%-24s %s  %s\n", u.Name, u.PublicKey, natsauth.SeedPath(out, u.Name))
			}
			fmt.Fprintf(stdout, "wrote %s (include it from nats.conf)\n", conf)
			return nil
		},
	}
	natsCmd.Flags().StringVar(&out, "out", "", "directory of the seed files and "+NATSUsersFile+" (created, mode 0700)")
	natsCmd.Flags().StringSliceVar(&tenants, "tenant", nil, "also make the read-only subscriber of this tenant (repeatable)")
	cmd.AddCommand(natsCmd)
	return cmd
}
