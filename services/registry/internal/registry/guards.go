package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// ReservedLabelPrefix starts the label keys only tenant-admins, platform-admins and the platform's
// services may set or change (agents as code marks the agents it manages with them).
const ReservedLabelPrefix = "agentid.dev/"

// Reasons of the guards' refusals.
const (
	// ReasonRequestIDReused is the AlreadyExists of a RegisterAgent whose request id registered an
	// agent for another caller or with another body.
	ReasonRequestIDReused = "REQUEST_ID_REUSED"
	// ReasonCallerNotActive is the PermissionDenied of an owner's command when the tenant's
	// directory does not list the caller as an ACTIVE principal.
	ReasonCallerNotActive = "CALLER_NOT_ACTIVE"
)

// checkCaller checks that an owner acting on its agents (requireOwner, its principal id; "" for
// admins and services) is still an ACTIVE principal of the tenant's directory, when the tenant has
// one: a departed or unknown principal keeps no owner rights. A directory that cannot answer is its
// own error (fail closed).
func (s *Service) checkCaller(tenant, requireOwner string) error {
	if requireOwner == "" || s.directory == nil {
		return nil
	}
	err := s.directory.CheckPrincipal(tenant, "caller", requireOwner)
	if err == nil {
		return nil
	}
	if errs.Is(err, errs.KindInvalidArgument) || errs.Is(err, errs.KindNotFound) {
		return errs.PermissionDenied(ReasonCallerNotActive,
			fmt.Sprintf("the caller %q is not an ACTIVE principal of tenant %s's directory: a departed or unknown principal holds no owner rights", printable(requireOwner), tenant)).
			WithMetadata("principal", requireOwner)
	}
	return err
}

// checkReservedLabels refuses a change of a label under ReservedLabelPrefix (added, changed or
// removed) from before to after; it is called for owners only.
func checkReservedLabels(before, after map[string]string) error {
	keys := slices.Sorted(maps.Keys(after))
	for k := range before {
		if _, ok := after[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, ReservedLabelPrefix) {
			continue
		}
		b, inBefore := before[k]
		a, inAfter := after[k]
		if inBefore == inAfter && a == b {
			continue
		}
		field := fmt.Sprintf("agent.labels[%s]", printable(k))
		return errs.InvalidArgument(field, field+": labels under "+ReservedLabelPrefix+
			" are set only by a tenant-admin, a platform-admin or the platform's services, not by an owner")
	}
	return nil
}

// ReservedRequestIDPrefixes start the request ids of registrations only tenant-admins,
// platform-admins and the platform's services may make: agents as code (`agents-as-code/<name>`)
// and discovery's adoption (`adopt-<finding id>`). The agent id derives from the tenant and the
// request id, and both are predictable: an owner registering first under one would hold that id,
// and the pipeline would meet REQUEST_ID_REUSED for good.
var ReservedRequestIDPrefixes = []string{"agents-as-code/", "adopt-"}

// adoptionKey is the context key of WithAdoption.
type adoptionKey struct{}

// WithAdoption marks a RegisterAgent as discovery's adoption of a finding (AdoptFinding), which an
// owner may call: its request id `adopt-<finding id>` is then the owner's to use. A remote caller
// cannot set it.
func WithAdoption(ctx context.Context) context.Context {
	return context.WithValue(ctx, adoptionKey{}, true)
}

// checkReservedRequestID refuses a request id under ReservedRequestIDPrefixes from an owner
// (requireOwner, its principal id; "" for admins and services), naming request_id; discovery's
// adoption (WithAdoption) may use `adopt-` for an owner.
func checkReservedRequestID(ctx context.Context, requestID, requireOwner string) error {
	if requireOwner == "" {
		return nil
	}
	adoption, _ := ctx.Value(adoptionKey{}).(bool)
	for _, p := range ReservedRequestIDPrefixes {
		if p == "adopt-" && adoption {
			continue
		}
		if strings.HasPrefix(requestID, p) {
			return invalid("request_id", fmt.Sprintf("request ids starting with %q are reserved for tenant-admins, platform-admins and the platform's services; an owner chooses another request_id", p))
		}
	}
	return nil
}

// checkOwnerNotSponsor refuses an agent whose sponsor is its owner: the sponsor is the second
// accountable principal and must be someone else.
func checkOwnerNotSponsor(field, owner, sponsor string) error {
	if owner != "" && owner == sponsor {
		return invalid(field, fmt.Sprintf("the owner and the sponsor must be different principals (both are %q): the sponsor is accountable apart from the owner", printable(owner)))
	}
	return nil
}

// registration is what the first RegisterAgent of an agent recorded: who registered it and the
// agent as registered.
type registration struct {
	actor eventstore.Actor
	agent *registryv1.Agent
}

// checkRepeat checks a RegisterAgent whose request id already registered the agent: it must come
// from the same caller (unless checkActor is false) with the same body, or it is refused naming the
// request id, so that nobody can pre-register an id another caller's request id leads to.
func (a *Agent) checkRepeat(c RegisterAgent, actor eventstore.Actor, checkActor bool) error {
	reg := a.registration
	if reg.agent == nil {
		return nil
	}
	if checkActor && reg.actor.ID != actor.ID {
		return errs.AlreadyExists(ReasonRequestIDReused,
			fmt.Sprintf("request_id: %q already registered agent %s for another caller; choose another request_id", printable(c.RequestID), a.Name())).
			WithMetadata("request_id", c.RequestID).WithMetadata("name", a.Name())
	}
	if !proto.Equal(registeredBody(reg.agent, reg.agent.GetState() == stProposed), registeredBody(c.Agent, c.Proposed)) {
		return errs.AlreadyExists(ReasonRequestIDReused,
			fmt.Sprintf("request_id: %q already registered agent %s with other content; a repeat must send the same agent (or use another request_id)", printable(c.RequestID), a.Name())).
			WithMetadata("request_id", c.RequestID).WithMetadata("name", a.Name())
	}
	return nil
}

// registeredBody is what a registration of a declares: its declared fields, keys and whether it is
// proposed.
func registeredBody(a *registryv1.Agent, proposed bool) *registryv1.Agent {
	out := declared(a)
	out.PublicJwks = a.GetPublicJwks()
	if proposed {
		out.State = stProposed
	}
	return out
}
