package workflowstest

import (
	"cmp"
	"context"
	"encoding/hex"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// SetPrincipals replaces tenant's directory with ps (none: the tenant has no directory).
func (r *Registry) SetPrincipals(tenant string, ps ...*registryv1.Principal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.principals == nil {
		r.principals = map[string][]*registryv1.Principal{}
	}
	var out []*registryv1.Principal
	for _, p := range ps {
		out = append(out, proto.CloneOf(p))
	}
	slices.SortFunc(out, func(a, b *registryv1.Principal) int { return cmp.Compare(a.GetId(), b.GetId()) })
	r.principals[tenant] = out
}

// ListPrincipals pages through a tenant's directory as the registry does: ordered by id, filtered by
// status, the page token the hex of the last id returned.
func (r *Registry) ListPrincipals(_ context.Context, req *registryv1.ListPrincipalsRequest) (*registryv1.ListPrincipalsResponse, error) {
	tenant, ok := strings.CutPrefix(req.GetParent(), "tenants/")
	if !ok || tenant == "" {
		return nil, errs.InvalidArgument("parent", "must be tenants/{tenant}")
	}
	after := ""
	if t := req.GetPageToken(); t != "" {
		b, err := hex.DecodeString(t)
		if err != nil || len(b) == 0 {
			return nil, errs.InvalidArgument("page_token", "is not a token returned by this service")
		}
		after = string(b)
	}
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 100
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	resp := &registryv1.ListPrincipalsResponse{}
	for _, p := range r.principals[tenant] {
		if p.GetId() <= after || (req.GetStatus() != registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED && p.GetStatus() != req.GetStatus()) {
			continue
		}
		if len(resp.Principals) == size {
			resp.NextPageToken = hex.EncodeToString([]byte(resp.Principals[size-1].GetId()))
			break
		}
		resp.Principals = append(resp.Principals, proto.CloneOf(p))
	}
	return resp, nil
}
