package cli

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// newKeysCmd is `agentctl keys`: the tenant's token signing keys, their rotation and KEK re-seal.
func newKeysCmd(g *globals) *cobra.Command {
	cmd := group("keys", "List and rotate the tenant's token signing keys; re-seal them under a new KEK")
	keyTable := func(ks []*issuerv1.SigningKey) func() table {
		return func() table {
			t := table{header: []string{"KID", "STATE", "CREATED", "ACTIVE FROM", "RETIRED", "REMOVED/REMOVE AFTER", "KEK"}}
			for _, k := range ks {
				t.rows = append(t.rows, []string{k.GetKeyId(), enumName(k.GetState().String(), "SIGNING_KEY_STATE_"),
					keyTime(k.GetCreateTime()), keyTime(k.GetActivateTime()), keyTime(k.GetRetireTime()), keyTime(k.GetRemoveTime()), k.GetKekId()})
			}
			return t
		}
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's signing keys with their states (NEXT, CURRENT, RETIRING, RETIRED) and dates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			res, err := issuerv1.NewIssuerServiceClient(conn).ListSigningKeys(cmd.Context(), &issuerv1.ListSigningKeysRequest{Parent: "tenants/" + g.tenantOr(s)})
			if err != nil {
				return err
			}
			msgs := make([]proto.Message, 0, len(res.GetKeys()))
			for _, k := range res.GetKeys() {
				msgs = append(msgs, k)
			}
			return g.printResult(msgs, true, keyTable(res.GetKeys()))
		},
	}
	var requestID string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Start a rotation: a NEXT key is published in the JWKS now and signs after the publish delay",
		Long: `Creates the tenant's NEXT signing key. It is published in the tenant's JWKS at once and becomes
CURRENT after the issuer's publish delay (at least the JWKS cache lifetime of verifiers); the old key is
then RETIRING, kept in the JWKS until every token it signed has expired, and removed. Refused
(FailedPrecondition) while a NEXT key exists.`,
		Example: "  agentctl keys rotate --tenant acme\n  agentctl keys list --tenant acme",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			requestID = requestIDOr(requestID, "rotate-signing-key")
			res, err := issuerv1.NewIssuerServiceClient(conn).RotateSigningKey(cmd.Context(), &issuerv1.RotateSigningKeyRequest{
				Parent: "tenants/" + g.tenantOr(s), RequestId: requestID,
			})
			if err != nil {
				if outcomeUnknown(err) {
					return mutationError("the rotation", requestID, "", err)
				}
				return err
			}
			return g.printResult([]proto.Message{res.GetKey()}, false, keyTable([]*issuerv1.SigningKey{res.GetKey()}))
		},
	}
	rotate.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	var all bool
	reseal := &cobra.Command{
		Use:   "reseal",
		Short: "Re-seal the signing keys in use under the issuer's current KEK (platform-admin)",
		Long: `Re-encrypts the private half of every signing key in use (NEXT, CURRENT, RETIRING) of the tenant, or
of every tenant with --all, under the issuer's current key-encryption key; keys already sealed with it are
left alone, so it can be repeated. Prints the keys in use left under each KEK: drop an old KEK from the
issuers' configuration once it has none (docs/rotation.md).`,
		Example: "  agentctl keys reseal --all",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			parent := ""
			if !all {
				parent = "tenants/" + g.tenantOr(s)
			}
			res, err := issuerv1.NewIssuerServiceClient(conn).ResealSigningKeys(cmd.Context(), &issuerv1.ResealSigningKeysRequest{Parent: parent})
			if err != nil {
				return err
			}
			return g.printResult([]proto.Message{res}, false, func() table {
				t := table{header: []string{"KEK", "KEYS IN USE", "CURRENT"}}
				for _, u := range res.GetKeks() {
					cur := ""
					if u.GetKekId() == res.GetKekId() {
						cur = fmt.Sprintf("yes (%d re-sealed now, %d already)", res.GetResealed(), res.GetUnchanged())
					}
					t.rows = append(t.rows, []string{u.GetKekId(), strconv.Itoa(int(u.GetKeys())), cur})
				}
				return t
			})
		},
	}
	reseal.Flags().BoolVar(&all, "all", false, "re-seal the keys of every tenant")
	cmd.AddCommand(list, rotate, reseal)
	return cmd
}

// keyTime formats a key date, or "-".
func keyTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
