package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/cmd/internal/manifest"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Results of applying one entry.
const (
	resultCreated   = "created"
	resultUpdated   = "updated"
	resultUnchanged = "unchanged"
	resultRetiring  = "retiring"
)

func newApplyCmd(g *globals) *cobra.Command {
	var (
		mf     manifestFlags
		prune  bool
		reason string
	)
	cmd := &cobra.Command{
		Use:   "apply -f DIR",
		Short: "Create and update the agents the manifests declare (and retire those removed, with --prune)",
		Long: `apply makes the registry hold the agents the manifests declare. Every manifest is checked first,
offline, then by the registry (validate_only) and the admission policy (a dry run): one bad document, one
change the registry refuses or the policy denies (or a policy that cannot be asked), and nothing is
applied; every problem is reported. Then each new agent is registered (its id derived from
metadata.name, its request id from the name so a re-run registers nothing twice), each changed agent is
updated with the etag read in this run (changed since: that agent stops with a conflict, the others go on),
and with --prune the agents of the set that no manifest declares any more are retired (trigger request).
A re-run with the same manifests changes nothing. The caller (the logged-in identity, e.g. the pipeline's)
is recorded by the registry with every change; --reason is recorded with each update and retirement.
Managed agents carry the labels agentid.dev/managed-by=agentctl, agentid.dev/source=<set> and
agentid.dev/name=<metadata.name>.`,
		Example: `  agentctl apply -f agents/ --set payments --reason "commit $GITHUB_SHA"
  agentctl apply -f agents/ --prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			p, conn, set, err := g.newPlanner(ctx, &mf, reason, true)
			if err != nil {
				return err
			}
			defer conn.Close()
			rep, err := p.plan(ctx, set, prune)
			if err != nil {
				return err
			}
			if rep.Summary.Refused > 0 {
				if err := g.printPlan(rep, false); err != nil {
					return err
				}
				return fmt.Errorf("%d change(s) of set %s would be refused: %w", rep.Summary.Refused, rep.Set, errNothingApplied)
			}
			for _, e := range rep.Entries {
				if err := p.apply(ctx, e); err != nil {
					e.Result = "failed: " + err.Error()
					rep.Summary.Failed++
				}
			}
			if err := g.printPlan(rep, true); err != nil {
				return err
			}
			created, updated, retired := 0, 0, 0
			for _, e := range rep.Entries {
				switch e.Result {
				case resultCreated:
					created++
				case resultUpdated:
					updated++
				case resultRetiring:
					retired++
				}
			}
			if g.output == "table" {
				fmt.Fprintf(g.stdout, "\napplied set %s: %d created, %d updated, %d unchanged, %d retired, %d failed\n",
					rep.Set, created, updated, rep.Summary.Noop, retired, rep.Summary.Failed)
			}
			if rep.Summary.Failed > 0 {
				return fmt.Errorf("%d change(s) of set %s failed; the others were applied (re-run apply after fixing them)", rep.Summary.Failed, rep.Set)
			}
			return nil
		},
	}
	mf.register(cmd, true)
	cmd.Flags().BoolVar(&prune, "prune", false, "retire the agents of the set that no manifest declares any more")
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with every update and retirement (e.g. the commit or change ticket); default names the set")
	return cmd
}

// apply carries out one planned entry and records its result on it.
func (p *planner) apply(ctx context.Context, e *planEntry) error {
	switch e.Action {
	case actionNoop:
		e.Result = resultUnchanged
		return nil
	case actionCreate:
		requestID := manifest.CreateRequestID(e.Name)
		_, err := p.reg.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
			Parent: "tenants/" + e.Tenant, Agent: e.desired, RequestId: requestID,
		})
		if err != nil {
			return applyError("the registration of "+e.Name, err)
		}
		e.Result = resultCreated
		return nil
	case actionUpdate:
		req := p.updateRequest(e, false)
		_, err := p.reg.UpdateAgent(ctx, req)
		if status.Code(err) == codes.Aborted {
			return fmt.Errorf("conflict: %s changed since this run read it (etag %s): %s; not updated, re-run plan and apply", e.Agent, e.etag, describe(err))
		}
		if err != nil {
			return applyError("the update of "+e.Name, err)
		}
		e.Result = resultUpdated
		return nil
	case actionPrune:
		requestID := manifest.PruneRequestID(e.Agent)
		_, err := p.reg.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: e.Agent, Reason: p.reason + ": removed from the manifest set " + p.set, Etag: e.etag,
			RequestId: requestID, Trigger: "request",
		})
		if status.Code(err) == codes.Aborted || isEtagMismatch(err) {
			return fmt.Errorf("conflict: %s changed since this run read it (etag %s): %s; not retired, re-run apply --prune", e.Agent, e.etag, describe(err))
		}
		if err != nil {
			return applyError("the retirement of "+e.Agent, err)
		}
		e.Result = resultRetiring
		return nil
	}
	return errors.New("nothing to apply for action " + e.Action)
}

// applyError describes a failed change: a definite refusal as the registry said it, an unknown
// outcome as such (a re-run of apply repeats the same request ids, so nothing is applied twice).
func applyError(what string, err error) error {
	if outcomeUnknown(err) {
		return fmt.Errorf("the outcome of %s is unknown (%s): re-run apply; its request ids are derived from the manifests, so nothing is applied twice", what, describe(err))
	}
	return errors.New(describe(err))
}

// isEtagMismatch reports whether err is the registry's refusal of a stale etag.
func isEtagMismatch(err error) bool {
	return errorReason(err) == "ETAG_MISMATCH"
}

// errorReason is the ErrorInfo reason of a gRPC error, "" when it has none.
func errorReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if r, ok := d.(interface{ GetReason() string }); ok {
			return r.GetReason()
		}
	}
	return ""
}
