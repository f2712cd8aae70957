package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// newAgentsKeyCmds returns `agents keys add|list|remove` and `agents rotate`.
func newAgentsKeyCmds(g *globals) []*cobra.Command {
	keys := group("keys", "List, add and remove an agent's public keys (rotation)")
	keys.AddCommand(newAgentsKeysListCmd(g), newAgentsKeysAddCmd(g), newAgentsKeysRemoveCmd(g))
	return []*cobra.Command{keys, newAgentsRotateCmd(g)}
}

func (g *globals) printAgentKeys(a *registryv1.Agent) error {
	msgs := make([]proto.Message, len(a.GetKeys()))
	for i, k := range a.GetKeys() {
		msgs[i] = k
	}
	return g.printResult(msgs, true, func() table {
		t := table{header: []string{"KID", "THUMBPRINT", "ALG", "ADDED"}}
		for _, k := range a.GetKeys() {
			t.rows = append(t.rows, []string{k.GetKid(), k.GetThumbprint(), k.GetAlgorithm(), k.GetAddTime().AsTime().UTC().Format("2006-01-02T15:04:05Z")})
		}
		return t
	})
}

func newAgentsKeysListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list AGENT",
		Short: "List an agent's public keys with when each was added",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				res, err := registryv1.NewRegistryServiceClient(conn).GetAgent(cmd.Context(), &registryv1.GetAgentRequest{Name: name})
				if err != nil {
					return err
				}
				return g.printAgentKeys(res.GetAgent())
			})
		},
	}
}

func newAgentsKeysAddCmd(g *globals) *cobra.Command {
	var jwkFile, requestID string
	cmd := &cobra.Command{
		Use:   "add AGENT --jwk-file KEY.json",
		Short: "Register an agent's next public key: a rotation starts (both keys work during the overlap)",
		Long: `Register the agent's next public key (one JWK with a kid, ES256 or EdDSA, public members only).
The rotation run adds it to the agent's client, waits for the overlap, then removes the old key and
revokes the tokens it obtained. Refused: private keys, other algorithms, a key in use by this or
another agent of the tenant, a third key while a rotation is in progress.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jwkFile == "" {
				return errors.New("--jwk-file is required: the public JWK of the next key")
			}
			b, err := os.ReadFile(jwkFile)
			if err != nil {
				return err
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "keys-add")
				res, err := registryv1.NewRegistryServiceClient(conn).AddAgentKey(cmd.Context(), &registryv1.AddAgentKeyRequest{
					Name: name, PublicJwk: string(b), RequestId: requestID,
				})
				if err != nil {
					return mutationError("the key registration", requestID, "", err)
				}
				return g.printAgentKeys(res.GetAgent())
			})
		},
	}
	cmd.Flags().StringVar(&jwkFile, "jwk-file", "", "the next key as one public JWK (JSON)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	return cmd
}

func newAgentsKeysRemoveCmd(g *globals) *cobra.Command {
	var reason, requestID string
	cmd := &cobra.Command{
		Use:   "remove AGENT THUMBPRINT --reason TEXT",
		Short: "Remove one of an agent's keys from the registry (the rotation run does this itself)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "keys-remove")
				res, err := registryv1.NewRegistryServiceClient(conn).RemoveAgentKey(cmd.Context(), &registryv1.RemoveAgentKeyRequest{
					Name: name, Thumbprint: args[1], Reason: reason, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the key removal", requestID, "", err)
				}
				return g.printAgentKeys(res.GetAgent())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	return cmd
}

// publicJWKOf is the one public JWK of a credential.
func publicJWKOf(cred *authn.Credential) (string, error) {
	set, err := cred.PublicJWKS()
	if err != nil {
		return "", err
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(set, &doc); err != nil || len(doc.Keys) != 1 {
		return "", fmt.Errorf("the new credential's public key set is not one key: %v", err)
	}
	return string(doc.Keys[0]), nil
}

func newAgentsRotateCmd(g *globals) *cobra.Command {
	var keyOut, keyIn, requestID string
	cmd := &cobra.Command{
		Use:   "rotate AGENT --key-out NEW.json",
		Short: "Rotate an agent's credential: generate a key locally, register it, write the new credential file",
		Long: `Generate the agent's next ES256 key on this machine, write its credential file to --key-out
(before anything is sent; removed again if the registry refuses the key), and register the public
key (AddAgentKey). The private key never leaves this machine. Both credentials work during the
rotation's overlap; then the old key is removed and its tokens revoked: switch the agent to the new
file before the overlap ends.

An agent rotating its own credential (logged in with it, or --key-in CURRENT.json) proves that it
holds its current key: the request carries a proof signed with it (the registry refuses an agent's
own addition without one, so a stolen access token cannot plant a key). The owner is notified of
every key added.`,
		Example: `  agentctl agents rotate agt_01j... --key-out agent-next.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyOut == "" {
				return errors.New("--key-out is required: where to write the new credential file")
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			name, err := g.agentName(s, args[0])
			if err != nil {
				return err
			}
			res, err := registryv1.NewRegistryServiceClient(conn).GetAgent(cmd.Context(), &registryv1.GetAgentRequest{Name: name})
			if err != nil {
				return err
			}
			agent := res.GetAgent()
			retrying := requestID != ""
			requestID = requestIDOr(requestID, "rotate")
			cred, reused, err := credentialFileFor(s, agent.GetTenant(), agent.GetAgentId(), keyOut, "a rotation", retrying)
			if err != nil {
				return err
			}
			jwk, err := publicJWKOf(cred)
			if err != nil {
				if !reused {
					_ = os.Remove(keyOut)
				}
				return err
			}
			actx, err := keyProofContext(cmd.Context(), s, agent, keyIn, cred, requestID)
			if err != nil {
				if !reused {
					_ = os.Remove(keyOut)
				}
				return err
			}
			added, err := registryv1.NewRegistryServiceClient(conn).AddAgentKey(actx, &registryv1.AddAgentKeyRequest{
				Name: name, PublicJwk: jwk, RequestId: requestID,
			})
			if err != nil {
				if outcomeUnknown(err) {
					return mutationError("the key registration", requestID, "--key-out "+keyOut+" (the key written there is reused)", err)
				}
				if !reused {
					_ = os.Remove(keyOut) // refused: nothing stays behind
				}
				return err
			}
			fmt.Fprintf(g.stderr, "wrote the agent's new credential to %s (key %s); the rotation run removes the old key after the overlap\n",
				keyOut, added.GetKey().GetThumbprint())
			return g.printAgentKeys(added.GetAgent())
		},
	}
	cmd.Flags().StringVar(&keyOut, "key-out", "", "where to write the new credential file (required; never overwritten)")
	cmd.Flags().StringVar(&keyIn, "key-in", "", "the agent's current credential file: signs the proof of possession (default: the session's credential when it is the agent's)")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry with it reuses the key written to --key-out)")
	return cmd
}

// keyProofContext returns ctx with the proof of possession of a current key of agent
// (authn.KeyProofMetadata) over the new credential's key and requestID, signed with the credential
// in keyIn or, without it, with the session's credential when that is the agent's own; ctx
// unchanged when neither is the agent's (an owner or admin needs no proof).
func keyProofContext(ctx context.Context, s *session, agent *registryv1.Agent, keyIn string, next *authn.Credential, requestID string) (context.Context, error) {
	var current *authn.Credential
	switch {
	case keyIn != "":
		data, err := readOwnedPrivateFile(keyIn)
		if err != nil {
			return nil, fmt.Errorf("--key-in %s: %w", keyIn, err)
		}
		if current, err = authn.ParseCredential(data); err != nil {
			return nil, fmt.Errorf("--key-in %s: %w", keyIn, err)
		}
		if current.ClientID != agent.GetAgentId() || current.Tenant != agent.GetTenant() {
			return nil, fmt.Errorf("--key-in %s is the credential of %s/%s, not of agent %s", keyIn, current.Tenant, current.ClientID, agent.GetName())
		}
	case s.CredentialFile != "":
		c, err := authn.LoadCredentialFile(s.CredentialFile)
		if err != nil || c.ClientID != agent.GetAgentId() || c.Tenant != agent.GetTenant() {
			return ctx, nil
		}
		current = c
	default:
		return ctx, nil
	}
	pub, err := publicJWKOf(next)
	if err != nil {
		return nil, err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON([]byte(pub)); err != nil {
		return nil, fmt.Errorf("the new credential's public key: %w", err)
	}
	tp, err := authn.Thumbprint(k)
	if err != nil {
		return nil, err
	}
	proof, err := current.KeyProof(agent.GetName(), tp, requestID, time.Now())
	if err != nil {
		return nil, err
	}
	return metadata.AppendToOutgoingContext(ctx, authn.KeyProofMetadata, proof), nil
}
