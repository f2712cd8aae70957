package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

func newClientsCmd(g *globals) *cobra.Command {
	cmd := group("clients", "Create service and staff identities (OAuth clients with platform roles)")
	var roles, scopes, resources []string
	var keyOut, requestID string
	var dpopBound bool
	create := &cobra.Command{
		Use:   "create CLIENT_ID",
		Short: "Create an identity of the tenant with the given roles; its key pair is generated",
		Example: `  agentctl clients create alice --role approver --key-out alice.json
  agentctl login --credentials alice.json --config-dir ~/.config/agentid-alice
  agentctl clients create files-rs --role resource-server --resource https://files.example --key-out files-rs.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyOut == "" {
				return errors.New("--key-out FILE is required: the identity's private key is written there")
			}
			if len(roles) == 0 {
				return errors.New("--role is required (tenant-admin, owner, approver, auditor or analyst)")
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			tenant := g.tenantOr(s)
			retrying := requestID != ""
			requestID = requestIDOr(requestID, "create-client")
			// The key file is on disk before the issuer is asked, so a lost answer never leaves an
			// identity without its key; a retry with the same request id reuses it.
			cred, reused, err := credentialFileFor(s, tenant, args[0], keyOut, "a client creation", retrying)
			if err != nil {
				return err
			}
			jwks, err := cred.PublicJWKS()
			if err != nil {
				return err
			}
			res, err := issuerv1.NewIssuerServiceClient(conn).CreateClient(cmd.Context(), &issuerv1.CreateClientRequest{
				Parent: "tenants/" + tenant, RequestId: requestID,
				Client: &issuerv1.Client{ClientId: args[0], PublicJwks: string(jwks), Roles: roles, Scopes: scopes, DpopBound: dpopBound, Resources: resources},
			})
			if err != nil {
				if outcomeUnknown(err) {
					return mutationError("the client creation", requestID, "--key-out "+keyOut+" (the key written there is reused)", err)
				}
				if !reused {
					_ = os.Remove(keyOut) // refused: nothing stays behind
				}
				return err
			}
			fmt.Fprintf(g.stderr, "wrote the private key credential of %s to %s\n", res.GetClient().GetName(), keyOut)
			c := res.GetClient()
			return g.printResult([]proto.Message{c}, false, func() table {
				return table{header: []string{"NAME", "ROLES", "STATE"}, rows: [][]string{{
					c.GetName(), strings.Join(c.GetRoles(), ","), enumName(c.GetState().String(), "CLIENT_STATE_"),
				}}}
			})
		},
	}
	create.Flags().StringSliceVar(&roles, "role", nil, "platform role (repeat or comma-separate)")
	create.Flags().StringSliceVar(&scopes, "scope", nil, "scopes the identity may ask for in tokens")
	create.Flags().StringArrayVar(&resources, "resource", nil, "RFC 8707 resource (absolute URI) the identity may ask tokens for (repeat for several); introspecting others' tokens needs --role introspector")
	create.Flags().StringVar(&keyOut, "key-out", "", "where to write the identity's credential file (0600)")
	create.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	create.Flags().BoolVar(&dpopBound, "dpop", false, "DPoP-bound identity (RFC 9449): its tokens are bound to a DPoP key, never bearer tokens")
	cmd.AddCommand(create)
	return cmd
}
