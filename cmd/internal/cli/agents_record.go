package cli

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// newAgentsRecordCmds are the commands of the agent record: update, history and submit.
func newAgentsRecordCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newAgentsUpdateCmd(g), newAgentsHistoryCmd(g), newAgentsSubmitCmd(g)}
}

// updateFlag maps an update flag onto the update_mask path it sets.
var updateFlags = map[string]string{
	"display-name": "display_name", "purpose": "purpose",
	"environment": "environment", "autonomy": "autonomy", "identity-model": "identity_model",
	"trust-boundary": "trust_boundary", "sensitivity": "data_sensitivity", "scope": "scopes", "role": "roles",
	"credential-type": "credential_type", "function": "function", "decommission-criteria": "decommission_criteria",
	"label": "labels", "dependency": "dependencies", "expires-in": "expire_time",
}

func newAgentsUpdateCmd(g *globals) *cobra.Command {
	var (
		a                                                   registryv1.Agent
		env, autonomy, model, boundary, sensitivity, credTy string
		labels, deps                                        []string
		expiresIn                                           time.Duration
		etag, reason, requestID                             string
		validateOnly                                        bool
	)
	cmd := &cobra.Command{
		Use:   "update AGENT",
		Short: "Change an agent's declared fields (only the flags given); a classification change reclassifies it",
		Long: `Change an agent's declared fields: only the fields whose flags are given change (--scope, --role,
--label and --dependency replace the whole list; give them empty to clear it). The update is
recorded with who made it, the request id and --reason (agentctl agents history shows it).

--etag is the agent's etag as you last read it (agentctl agents get): a stale etag is refused with
ETAG_MISMATCH and nothing changes. Without --etag the agent is read first and its current etag used.

Owner and sponsor change only with agentctl agents transfer (a reason is required and recorded).
On a PENDING, ACTIVE or SUSPENDED agent, a change of any policy input (adding scopes or roles,
environment, autonomy, identity model, trust boundary, sensitivity, function, credential type, a
later or cleared expiry, a higher risk tier) must pass the policy admission. The environment cannot change once the agent is
past PENDING: register a new agent for another environment. --validate-only shows the result
without recording anything.
Callers: platform-admin, tenant-admin, the agent's owner.`,
		Example: `  agentctl agents update agt_01j... --etag 42 --purpose "answers billing questions" --reason "scope review"
  agentctl agents update agt_01j... --scope faq.read --scope ticket.search --validate-only
  agentctl agents update agt_01j... --label team=support --label cost-center=cc-42`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var paths []string
			for flag, path := range updateFlags {
				if cmd.Flags().Changed(flag) {
					paths = append(paths, path)
				}
			}
			if len(paths) == 0 {
				return fmt.Errorf("nothing to update: give at least one of --%s", strings.Join(sortedKeys(updateFlags), ", --"))
			}
			var err error
			set := func(flag string) bool { return cmd.Flags().Changed(flag) }
			if set("environment") {
				if a.Environment, err = enumOf[registryv1.Environment]("environment", env, "ENVIRONMENT_", registryv1.Environment_value); err != nil {
					return err
				}
			}
			if set("autonomy") {
				if a.Autonomy, err = enumOf[registryv1.Autonomy]("autonomy", autonomy, "AUTONOMY_", registryv1.Autonomy_value); err != nil {
					return err
				}
			}
			if set("identity-model") {
				if a.IdentityModel, err = enumOf[registryv1.IdentityModel]("identity-model", model, "IDENTITY_MODEL_", registryv1.IdentityModel_value); err != nil {
					return err
				}
			}
			if set("trust-boundary") {
				if a.TrustBoundary, err = enumOf[registryv1.TrustBoundary]("trust-boundary", boundary, "TRUST_BOUNDARY_", registryv1.TrustBoundary_value); err != nil {
					return err
				}
			}
			if set("sensitivity") {
				if a.DataSensitivity, err = enumOf[registryv1.DataSensitivity]("sensitivity", sensitivity, "DATA_SENSITIVITY_", registryv1.DataSensitivity_value); err != nil {
					return err
				}
			}
			if set("credential-type") {
				if a.CredentialType, err = enumOf[registryv1.CredentialType]("credential-type", credTy, "CREDENTIAL_TYPE_", registryv1.CredentialType_value); err != nil {
					return err
				}
			}
			if set("label") {
				if a.Labels, err = parseLabels(labels); err != nil {
					return err
				}
			}
			if set("dependency") {
				if a.Dependencies, err = parseDependencies(deps); err != nil {
					return err
				}
			}
			if set("expires-in") && expiresIn > 0 {
				a.ExpireTime = timestamppb.New(time.Now().Add(expiresIn))
			}
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				rc := registryv1.NewRegistryServiceClient(conn)
				if etag == "" {
					cur, err := rc.GetAgent(cmd.Context(), &registryv1.GetAgentRequest{Name: name})
					if err != nil {
						return err
					}
					etag = cur.GetAgent().GetEtag()
					fmt.Fprintf(g.stderr, "updating %s at its current etag %s\n", name, etag)
				}
				requestID = requestIDOr(requestID, "update")
				a.Name = name
				res, err := rc.UpdateAgent(cmd.Context(), &registryv1.UpdateAgentRequest{
					Agent: proto.CloneOf(&a), UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}, Etag: etag,
					RequestId: requestID, ValidateOnly: validateOnly, Reason: reason,
				})
				if err != nil {
					return mutationError("the update", requestID, "--etag "+etag, err)
				}
				switch {
				case len(res.GetChangedFields()) == 0:
					fmt.Fprintln(g.stderr, "no change: the agent already has these values (nothing recorded)")
				case validateOnly:
					fmt.Fprintf(g.stderr, "would change: %s (validate only: nothing recorded)\n", strings.Join(res.GetChangedFields(), ", "))
				default:
					fmt.Fprintf(g.stderr, "changed: %s\n", strings.Join(res.GetChangedFields(), ", "))
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.DisplayName, "display-name", "", "human-readable name")
	f.StringVar(&a.Purpose, "purpose", "", "business purpose")
	f.StringVar(&env, "environment", "", "dev, test, staging or prod (only while PROPOSED or PENDING)")
	f.StringVar(&autonomy, "autonomy", "", "assistive or autonomous")
	f.StringVar(&model, "identity-model", "", "autonomous or delegated")
	f.StringVar(&boundary, "trust-boundary", "", "internal, b2b or public")
	f.StringVar(&sensitivity, "sensitivity", "", "public, internal, confidential, pii, phi or pci")
	f.StringSliceVar(&a.Scopes, "scope", nil, "the agent's scopes (replaces them; repeat or comma-separate)")
	f.StringSliceVar(&a.Roles, "role", nil, "the agent's roles (replaces them; repeat or comma-separate)")
	f.StringVar(&credTy, "credential-type", "", "private-key-jwt or private-key-jwt-dpop")
	f.StringVar(&a.Function, "function", "", "assistant, retrieval, automation, data-pipeline, code, customer-support, security, finance or other")
	f.StringVar(&a.DecommissionCriteria, "decommission-criteria", "", "when the agent must be decommissioned, in a sentence")
	f.StringArrayVar(&labels, "label", nil, "label key=value (replaces them; repeat)")
	f.StringArrayVar(&deps, "dependency", nil, "dependency kind=uri[,description] (replaces them; repeat), e.g. queue=nats://nats/orders")
	f.DurationVar(&expiresIn, "expires-in", 0, "new lifetime from now (e.g. 720h); 0 removes the expiry")
	f.StringVar(&etag, "etag", "", "the agent's etag as last read (default: its current etag)")
	f.StringVar(&reason, "reason", "", "why, recorded with the change")
	f.BoolVar(&validateOnly, "validate-only", false, "show the result without recording anything")
	f.StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key changes nothing new)")
	return cmd
}

// parseLabels parses key=value labels.
func parseLabels(kvs []string) (map[string]string, error) {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// parseDependencies parses kind=uri[,description] dependencies.
func parseDependencies(specs []string) ([]*registryv1.Dependency, error) {
	var out []*registryv1.Dependency
	for _, s := range specs {
		kind, rest, ok := strings.Cut(s, "=")
		if !ok || kind == "" || rest == "" {
			return nil, fmt.Errorf("--dependency %q: want kind=uri[,description]", s)
		}
		uri, desc, _ := strings.Cut(rest, ",")
		out = append(out, &registryv1.Dependency{Kind: kind, Uri: uri, Description: desc})
	}
	return out, nil
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func newAgentsHistoryCmd(g *globals) *cobra.Command {
	var pageSize int32
	cmd := &cobra.Command{
		Use:   "history AGENT",
		Short: "Show an agent's full timeline: every change with its time, actor, request id and changed fields",
		Long: `Show an agent's timeline, oldest first: every event the registry recorded for it (registration,
updates, state changes, keys, ownership) with its version (the agent's etag after it), time, actor,
request id and the fields it changed. -o json adds each event's payload.
Callers: any role of the agent's tenant.`,
		Example: `  agentctl agents history agt_01j...
  agentctl agents history agt_01j... -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				rc := registryv1.NewRegistryServiceClient(conn)
				var entries []*registryv1.AgentHistoryEntry
				token := ""
				for {
					res, err := rc.GetAgentHistory(cmd.Context(), &registryv1.GetAgentHistoryRequest{Name: name, PageSize: pageSize, PageToken: token})
					if err != nil {
						return err
					}
					entries = append(entries, res.GetEntries()...)
					if token = res.GetNextPageToken(); token == "" {
						break
					}
				}
				msgs := make([]proto.Message, len(entries))
				for i, e := range entries {
					msgs[i] = e
				}
				return g.printResult(msgs, true, func() table {
					t := table{header: []string{"VERSION", "TIME", "EVENT", "ACTOR", "REQUEST", "CHANGED", "SUMMARY"}}
					for _, e := range entries {
						t.rows = append(t.rows, []string{fmt.Sprint(e.GetVersion()), e.GetTime().AsTime().Format("2006-01-02T15:04:05Z"),
							e.GetEventType(), e.GetActor(), e.GetRequestId(), strings.Join(e.GetChangedFields(), ","), e.GetSummary()})
					}
					return t
				})
			})
		},
	}
	cmd.Flags().Int32Var(&pageSize, "page-size", 500, "entries per request (at most 1000)")
	return cmd
}

func newAgentsSubmitCmd(g *globals) *cobra.Command {
	var etag, requestID string
	cmd := &cobra.Command{
		Use:   "submit AGENT",
		Short: "Submit a PROPOSED agent: it becomes PENDING and its provisioning starts",
		Long: `Submit a PROPOSED agent (registered with --proposed, adopted from a discovery finding or planned
as code): it becomes PENDING and its provisioning (policy, approvals, credentials) starts. Any other
state is refused.
Callers: platform-admin, tenant-admin, the agent's owner.`,
		Example: `  agentctl agents submit agt_01j...`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAgent(cmd.Context(), args[0], func(conn *grpc.ClientConn, name string) error {
				requestID = requestIDOr(requestID, "submit")
				res, err := registryv1.NewRegistryServiceClient(conn).SubmitAgent(cmd.Context(), &registryv1.SubmitAgentRequest{
					Name: name, Etag: etag, RequestId: requestID,
				})
				if err != nil {
					return mutationError("the submission", requestID, "", err)
				}
				return g.printAgents([]*registryv1.Agent{res.GetAgent()}, false)
			})
		},
	}
	cmd.Flags().StringVar(&etag, "etag", "", "submit only if the agent is still at this etag")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key submits nothing new)")
	return cmd
}

// recordRegisterFlags are the flags of `agents register` for the rest of the agent record.
type recordRegisterFlags struct {
	credType             string
	labels, deps         []string
	proposed, validateOn bool
}

// addRecordRegisterFlags adds the record's flags to `agents register`, filling a.
func addRecordRegisterFlags(f *pflag.FlagSet, a *registryv1.Agent) *recordRegisterFlags {
	r := &recordRegisterFlags{}
	f.StringVar(&a.Function, "function", "", "assistant, retrieval, automation, data-pipeline, code, customer-support, security, finance or other")
	f.StringSliceVar(&a.Roles, "role", nil, "role the agent holds (repeat or comma-separate)")
	f.StringVar(&r.credType, "credential-type", "", "private-key-jwt (default) or private-key-jwt-dpop")
	f.StringVar(&a.DecommissionCriteria, "decommission-criteria", "", "when the agent must be decommissioned, in a sentence")
	f.StringArrayVar(&r.labels, "label", nil, "label key=value (repeat)")
	f.StringArrayVar(&r.deps, "dependency", nil, "dependency kind=uri[,description] (repeat), e.g. queue=nats://nats/orders")
	f.BoolVar(&r.proposed, "proposed", false, "register a PROPOSED draft: no provisioning until 'agentctl agents submit'")
	f.BoolVar(&r.validateOn, "validate-only", false, "validate and classify without registering (no key is written)")
	return r
}

// apply parses the record's flags into a. With --validate-only and no key given, a throwaway public
// key stands in (nothing is registered, no key is written); --key-out is refused.
func (r *recordRegisterFlags) apply(a *registryv1.Agent, keyOut, jwksFile string) error {
	var err error
	if r.credType != "" {
		if a.CredentialType, err = enumOf[registryv1.CredentialType]("credential-type", r.credType, "CREDENTIAL_TYPE_", registryv1.CredentialType_value); err != nil {
			return err
		}
	}
	if len(r.labels) > 0 {
		if a.Labels, err = parseLabels(r.labels); err != nil {
			return err
		}
	}
	if len(r.deps) > 0 {
		if a.Dependencies, err = parseDependencies(r.deps); err != nil {
			return err
		}
	}
	if !r.validateOn {
		return nil
	}
	if keyOut != "" {
		return errors.New("--validate-only registers nothing: omit --key-out (a throwaway key is used) or give --jwks-file")
	}
	if jwksFile == "" {
		cred, err := authn.NewCredential("validate-only", "validate-only", "https://validate-only.invalid/t/validate-only")
		if err != nil {
			return err
		}
		jwks, err := cred.PublicJWKS()
		if err != nil {
			return err
		}
		a.PublicJwks = string(jwks)
	}
	return nil
}
