package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/names"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

func newAgentsCmd(g *globals) *cobra.Command {
	cmd := group("agents", "Register, inspect, suspend, resume and retire agents")
	cmd.AddCommand(newAgentsRegisterCmd(g), newAgentsGetCmd(g), newAgentsListCmd(g), newAgentsRetireCmd(g),
		newAgentsWorkflowsCmd(g), newAgentsApproveCmd(g), newAgentsSuspendCmd(g), newAgentsResumeCmd(g))
	cmd.AddCommand(newAgentsKeyCmds(g)...)
	cmd.AddCommand(newAgentsGraphCmd(g))
	cmd.AddCommand(newAgentsTransferCmd(g))
	cmd.AddCommand(newAgentsRecordCmds(g)...)
	return cmd
}

// enumFlag maps a short lowercase flag value onto a protobuf enum value by its name.
func enumFlag(flag, value, prefix string, values map[string]int32) (int32, error) {
	v, ok := values[prefix+strings.ToUpper(strings.ReplaceAll(value, "-", "_"))]
	if !ok || v == 0 {
		var names []string
		for n, x := range values {
			if x != 0 {
				names = append(names, strings.ToLower(strings.TrimPrefix(n, prefix)))
			}
		}
		return 0, fmt.Errorf("--%s %q: want one of %s", flag, value, strings.Join(names, ", "))
	}
	return v, nil
}

func newAgentsRegisterCmd(g *globals) *cobra.Command {
	var (
		a                                           registryv1.Agent
		env, autonomy, model, boundary, sensitivity string
		jwksFile, keyOut, requestID                 string
		expiresIn, ttl                              time.Duration
		rf                                          *recordRegisterFlags
	)
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register an agent (it starts PENDING; provisioning decides)",
		Example: `  agentctl agents register --display-name "FAQ bot" --owner team:support --purpose "answers FAQ" \
    --environment dev --sensitivity internal --scope faq.read --key-out faq-bot.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if a.Environment, err = enumOf[registryv1.Environment]("environment", env, "ENVIRONMENT_", registryv1.Environment_value); err != nil {
				return err
			}
			if a.Autonomy, err = enumOf[registryv1.Autonomy]("autonomy", autonomy, "AUTONOMY_", registryv1.Autonomy_value); err != nil {
				return err
			}
			if a.IdentityModel, err = enumOf[registryv1.IdentityModel]("identity-model", model, "IDENTITY_MODEL_", registryv1.IdentityModel_value); err != nil {
				return err
			}
			if a.TrustBoundary, err = enumOf[registryv1.TrustBoundary]("trust-boundary", boundary, "TRUST_BOUNDARY_", registryv1.TrustBoundary_value); err != nil {
				return err
			}
			if a.DataSensitivity, err = enumOf[registryv1.DataSensitivity]("sensitivity", sensitivity, "DATA_SENSITIVITY_", registryv1.DataSensitivity_value); err != nil {
				return err
			}
			if err := checkTTL(ttl, expiresIn); err != nil {
				return err
			}
			if ttl > 0 {
				expiresIn = ttl
			}
			if expiresIn > 0 {
				a.ExpireTime = timestamp(time.Now().Add(expiresIn))
			}
			if jwksFile != "" && keyOut != "" {
				return errors.New("--jwks-file and --key-out are exclusive")
			}
			if err := rf.apply(&a, keyOut, jwksFile); err != nil {
				return err
			}
			if jwksFile == "" && keyOut == "" && a.PublicJwks == "" {
				return errors.New("the agent needs a public key: --key-out FILE (generate one) or --jwks-file FILE")
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			tenant := g.tenantOr(s)
			retrying := requestID != ""
			requestID = requestIDOr(requestID, "register")
			// The agent id follows from the request id, so the credential file is complete and on
			// disk before the registry is asked: a lost answer never leaves an agent without its key,
			// and a retry with the same request id finds the same agent and reuses the same key.
			agentID := names.DeriveAgentID(tenant, requestID)
			var cred *authn.Credential
			wroteKey := false
			switch {
			case a.PublicJwks != "": // --validate-only's throwaway key
			case jwksFile != "":
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return err
				}
				a.PublicJwks = string(b)
			default:
				var reused bool
				if cred, reused, err = credentialFileFor(s, tenant, agentID, keyOut, "a registration", retrying); err != nil {
					return err
				}
				wroteKey = !reused
				if reused {
					fmt.Fprintf(g.stderr, "reusing the key in %s written by an earlier attempt of request %s\n", keyOut, requestID)
				}
				jwks, err := cred.PublicJWKS()
				if err != nil {
					return err
				}
				a.PublicJwks = string(jwks)
			}
			res, err := registryv1.NewRegistryServiceClient(conn).RegisterAgent(cmd.Context(), &registryv1.RegisterAgentRequest{
				Parent: "tenants/" + tenant, Agent: &a, RequestId: requestID, Proposed: rf.proposed, ValidateOnly: rf.validateOn,
			})
			if err != nil {
				if outcomeUnknown(err) {
					retry := ""
					if keyOut != "" {
						retry = "--key-out " + keyOut + " (the key written there is reused)"
					}
					return mutationError("the registration", requestID, retry, err)
				}
				if wroteKey {
					_ = os.Remove(keyOut) // refused: nothing stays behind
				}
				return err
			}
			if cred != nil {
				if res.GetAgent().GetPublicJwks() != a.PublicJwks {
					if wroteKey {
						_ = os.Remove(keyOut)
					}
					return fmt.Errorf("request id %q already registered %s with another key; no key was written",
						requestID, res.GetAgent().GetName())
				}
				if id := res.GetAgent().GetAgentId(); id != cred.ClientID {
					// A registry that assigns ids another way: record the id it gave.
					cred.ClientID = id
					if err := authn.WriteCredentialFile(keyOut, cred); err != nil {
						return fmt.Errorf("agent registered as %s but writing its key failed: %w", res.GetAgent().GetName(), err)
					}
				}
				fmt.Fprintf(g.stderr, "wrote the agent's private key credential to %s\n", keyOut)
			}
			return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.DisplayName, "display-name", "", "human-readable name (required)")
	f.StringVar(&a.Owner, "owner", "", "accountable owner: team or person (required)")
	f.StringVar(&a.Sponsor, "sponsor", "", "who asked for the agent: team or person (required)")
	f.StringVar(&a.Purpose, "purpose", "", "business purpose (required)")
	f.StringVar(&env, "environment", "dev", "dev, test, staging or prod")
	f.StringVar(&autonomy, "autonomy", "assistive", "assistive or autonomous")
	f.StringVar(&model, "identity-model", "autonomous", "autonomous (acts as itself) or delegated (for a user)")
	f.StringVar(&boundary, "trust-boundary", "internal", "internal, b2b or public")
	f.StringVar(&sensitivity, "sensitivity", "internal", "public, internal, confidential, pii, phi or pci")
	f.StringSliceVar(&a.Scopes, "scope", nil, "allowed scope, resource.action[.qualifier] (repeat or comma-separate)")
	f.DurationVar(&expiresIn, "expires-in", 0, "identity lifetime (e.g. 720h); empty for the policy default")
	f.DurationVar(&ttl, "ttl", 0, "ephemeral agent: torn down this long after registration (1m to 720h; exclusive with --expires-in)")
	f.StringVar(&jwksFile, "jwks-file", "", "the agent's public JWK Set")
	f.StringVar(&keyOut, "key-out", "", "generate an ES256 key and write the agent's credential file here")
	f.StringVar(&requestID, "request-id", "", "idempotency key (retries with the same key register nothing new)")
	rf = addRecordRegisterFlags(f, &a)
	return cmd
}

// credentialFileFor returns the credential of client clientID of tenant for path: the one an earlier
// attempt of the same command wrote there (a retry: reused is true), or a new key pair written to path
// before the command is sent. A file is reused only for an explicit retry (retry: --request-id was
// given) and only when it is a regular file of the current user that no one else can read, holding a
// credential of that very client: a key planted by someone else is never registered. Any other
// existing file is refused: a key is never overwritten.
func credentialFileFor(s *session, tenant, clientID, path, what string, retry bool) (cred *authn.Credential, reused bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		refuse := fmt.Errorf("--key-out %s exists; refusing to overwrite a key (to retry %s, give its --request-id)", path, what)
		if !retry {
			return nil, false, refuse
		}
		data, err := readOwnedPrivateFile(path)
		if err != nil {
			return nil, false, fmt.Errorf("--key-out %s: %w; refusing to reuse it", path, err)
		}
		old, err := authn.ParseCredential(data)
		if err != nil || old.ClientID != clientID || old.Tenant != tenant {
			return nil, false, refuse
		}
		return old, true, nil
	}
	issuer, err := tenantIssuer(s, tenant)
	if err != nil {
		return nil, false, err
	}
	if cred, err = authn.NewCredential(tenant, clientID, issuer); err != nil {
		return nil, false, err
	}
	if err := authn.WriteCredentialFile(path, cred); err != nil {
		return nil, false, fmt.Errorf("--key-out %s: %w (nothing was registered)", path, err)
	}
	return cred, false, nil
}

// enumOf parses a flag into the protobuf enum type E.
func enumOf[E ~int32](flag, value, prefix string, values map[string]int32) (E, error) {
	v, err := enumFlag(flag, value, prefix, values)
	return E(v), err
}

// tenantIssuer derives a tenant's issuer identifier from the session credential's issuer.
func tenantIssuer(s *session, tenant string) (string, error) {
	cred, err := authn.LoadCredentialFile(s.CredentialFile)
	if err != nil {
		return "", err
	}
	i := strings.LastIndex(cred.Issuer, "/t/")
	if i < 0 {
		return "", fmt.Errorf("credential issuer %q is not of the form {base}/t/{tenant}", cred.Issuer)
	}
	return cred.Issuer[:i] + "/t/" + tenant, nil
}

func newAgentsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get AGENT",
		Short: "Show one agent (tenants/{tenant}/agents/{agent} or a bare id)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				res, err := registryv1.NewRegistryServiceClient(conn).GetAgent(cmd.Context(), &registryv1.GetAgentRequest{Name: name})
				if err != nil {
					return err
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
}

func newAgentsListCmd(g *globals) *cobra.Command {
	var limit int
	var filters agentListFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's agents, filtered and ordered (docs/inventory.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := filters.request("", time.Now())
			if err != nil {
				return err
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			req.Parent = "tenants/" + g.tenantOr(s)
			var all []*registryv1.Agent
			var total int64
			for len(all) < limit {
				req.PageSize = int32(min(1000, limit-len(all)))
				res, err := registryv1.NewRegistryServiceClient(conn).ListAgents(cmd.Context(), req)
				if err != nil {
					return err
				}
				all, total = append(all, res.GetAgents()...), res.GetTotalSize()
				if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			if err := g.printAgents(all, true); err != nil {
				return err
			}
			return filters.printTotal(g, total)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 1000, "maximum number of agents to show")
	filters.bind(cmd.Flags())
	return cmd
}

func newAgentsRetireCmd(g *globals) *cobra.Command {
	var reason, ticket, trigger, requestID string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "retire AGENT",
		Short: "Retire an agent (ACTIVE, PENDING or SUSPENDED): the deprovisioning workflow disables access and revokes every credential",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required: say why the agent is retired")
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				rc := registryv1.NewRegistryServiceClient(conn)
				requestID = requestIDOr(requestID, "retire")
				res, err := rc.RetireAgent(cmd.Context(), &registryv1.RetireAgentRequest{
					Name: name, Reason: reason, Ticket: ticket, RequestId: requestID, Trigger: trigger,
				})
				if err != nil {
					return mutationError("the retirement", requestID, "", err)
				}
				agent := res.GetAgent()
				if wait {
					ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
					defer cancel()
					for agent.GetState() != registryv1.AgentState_AGENT_STATE_RETIRED {
						select {
						case <-ctx.Done():
							return fmt.Errorf("agent %s is still %s after %s", name, agent.GetState(), timeout)
						case <-time.After(200 * time.Millisecond):
						}
						got, err := rc.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
						if err != nil {
							return err
						}
						agent = got.GetAgent()
					}
				}
				return g.printAgents([]*registryv1.Agent{agent}, false)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (project finished, replaced, owner left, policy violation ...)")
	cmd.Flags().StringVar(&ticket, "ticket", "", "change ticket the retirement is recorded under")
	cmd.Flags().StringVar(&trigger, "trigger", "", "what triggered it: request (default), ttl, inactivity, owner_departed, replacement, policy_violation, anomaly or task_completed")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until deprovisioning is verified and the agent is RETIRED")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long --wait waits")
	return cmd
}

func (g *globals) printAgents(as []*registryv1.Agent, list bool) error {
	msgs := make([]proto.Message, len(as))
	for i, a := range as {
		msgs[i] = a
	}
	return g.printResult(msgs, list, func() table {
		t := table{header: []string{"NAME", "DISPLAY NAME", "OWNER", "ENV", "RISK", "STATE", "SCOPES"}}
		for _, a := range as {
			t.rows = append(t.rows, []string{a.GetName(), a.GetDisplayName(), a.GetOwner(),
				enumName(a.GetEnvironment().String(), "ENVIRONMENT_"), enumName(a.GetRiskTier().String(), "RISK_TIER_"),
				enumName(a.GetState().String(), "AGENT_STATE_"), strings.Join(a.GetScopes(), ",")})
		}
		return t
	})
}
