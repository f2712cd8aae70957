package cli

import (
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func newTenantsCmd(g *globals) *cobra.Command {
	cmd := group("tenants", "Create and list tenants (platform-admin)")
	var display, requestID string
	create := &cobra.Command{
		Use:   "create TENANT_ID",
		Short: "Create a tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, _, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			requestID = requestIDOr(requestID, "create-tenant")
			res, err := registryv1.NewRegistryServiceClient(conn).CreateTenant(cmd.Context(), &registryv1.CreateTenantRequest{
				TenantId: args[0], DisplayName: display, RequestId: requestID,
			})
			if err != nil {
				return mutationError("the tenant creation", requestID, "", err)
			}
			return g.printTenants([]*registryv1.Tenant{res.GetTenant()}, false)
		},
	}
	create.Flags().StringVar(&display, "display-name", "", "human-readable name")
	create.Flags().StringVar(&requestID, "request-id", "", "idempotency key (retries with the same key create nothing new)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, _, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			var all []*registryv1.Tenant
			token := ""
			for {
				res, err := registryv1.NewRegistryServiceClient(conn).ListTenants(cmd.Context(),
					&registryv1.ListTenantsRequest{PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				all = append(all, res.GetTenants()...)
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			return g.printTenants(all, true)
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func (g *globals) printTenants(ts []*registryv1.Tenant, list bool) error {
	msgs := make([]proto.Message, len(ts))
	for i, t := range ts {
		msgs[i] = t
	}
	return g.printResult(msgs, list, func() table {
		t := table{header: []string{"TENANT", "DISPLAY NAME", "CREATED"}}
		for _, x := range ts {
			t.rows = append(t.rows, []string{x.GetTenantId(), x.GetDisplayName(), x.GetCreateTime().AsTime().Format("2006-01-02T15:04:05Z")})
		}
		return t
	})
}
