// Package telemetry answers queries over the telemetry store for authorized callers.
package telemetry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// maxKindLen bounds the kind filter.
const maxKindLen = 128

// Lister lists telemetry rows (implemented by every store.Store).
type Lister interface {
	List(ctx context.Context, q store.Query) ([]store.Event, string, error)
}

// ListRequest asks for one page of a tenant's telemetry.
type ListRequest struct {
	// Parent is the tenant, tenants/{tenant}.
	Parent string
	// Agent, if set, is an agent of that tenant, tenants/{tenant}/agents/{agent}.
	Agent string
	// Kind, if set, keeps one kind of event.
	Kind string
	// StartTime, if set, keeps events at or after it.
	StartTime time.Time
	// PageSize is 0 for the default, at most store.MaxPageSize is used.
	PageSize int
	// PageToken continues a previous list with the same filters.
	PageToken string
}

// Service lists telemetry.
type Service struct {
	store Lister
}

// New returns a Service over s.
func New(s Lister) *Service { return &Service{store: s} }

// List returns one page of a tenant's telemetry, newest first, and the next page's token. Callers
// must be a platform-admin, or a tenant-admin, auditor or analyst of the tenant.
func (s *Service) List(ctx context.Context, req ListRequest) ([]store.Event, string, error) {
	tenant, ok := strings.CutPrefix(req.Parent, "tenants/")
	switch {
	case req.Parent == "":
		return nil, "", errs.InvalidArgument("parent", "parent is required (tenants/{tenant})")
	case !ok || !authn.ValidTenant(tenant):
		return nil, "", errs.InvalidArgument("parent", "parent must be tenants/{tenant}")
	}
	if req.Agent != "" {
		id, ok := strings.CutPrefix(req.Agent, req.Parent+"/agents/")
		if !ok || id == "" || strings.Contains(id, "/") {
			return nil, "", errs.InvalidArgument("agent", fmt.Sprintf("agent must be %s/agents/{agent}", req.Parent))
		}
	}
	if len(req.Kind) > maxKindLen {
		return nil, "", errs.InvalidArgument("kind", fmt.Sprintf("kind must be at most %d characters", maxKindLen))
	}
	if req.PageSize < 0 {
		return nil, "", errs.InvalidArgument("page_size", "page_size must not be negative")
	}
	p, _ := authn.PrincipalFrom(ctx)
	if err := p.Authorize(tenant, authn.RolePlatformAdmin, authn.RoleTenantAdmin, authn.RoleAuditor, authn.RoleAnalyst); err != nil {
		return nil, "", err
	}
	events, next, err := s.store.List(ctx, store.Query{
		Tenant: tenant, Agent: req.Agent, Kind: req.Kind, Start: req.StartTime,
		PageSize: req.PageSize, PageToken: req.PageToken,
	})
	if err != nil {
		if errs.KindOf(err) == errs.KindInvalidArgument {
			return nil, "", err
		}
		return nil, "", errs.Internal(err)
	}
	return events, next, nil
}
