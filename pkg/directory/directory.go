// Package directory answers whether principals are ACTIVE in a tenant's directory as the registry
// holds it (people and teams a directory sync recorded). A departed or unknown principal holds no
// owner rights: every owner or sponsor decision, whichever way it arrives, is checked with it.
package directory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Lister is the one registry RPC a directory check needs; registryv1.RegistryServiceClient has it.
type Lister interface {
	ListPrincipals(ctx context.Context, in *registryv1.ListPrincipalsRequest, opts ...grpc.CallOption) (*registryv1.ListPrincipalsResponse, error)
}

// LookupTimeout bounds the registry reads of one check.
const LookupTimeout = 10 * time.Second

const (
	// pageSize is the page size of the paged reads (the registry's maximum).
	pageSize = 1000
	// maxIDsPerRequest is how many ids one request names (the registry's limit).
	maxIDsPerRequest = 100
)

// NotActiveError says that a tenant with a directory does not list a principal as ACTIVE.
type NotActiveError struct {
	// Tenant whose directory it is.
	Tenant string
	// Principal is the id checked.
	Principal string
}

// Error implements error.
func (e *NotActiveError) Error() string {
	return fmt.Sprintf("%s is not an ACTIVE principal of tenant %s's directory: a departed or unknown principal holds no owner rights", e.Principal, e.Tenant)
}

// CheckActive checks id against tenant's directory: nil when the directory lists id as ACTIVE or the
// tenant has no directory (no principals at all), a *NotActiveError when it has one that does not,
// and another error (wrapping the registry's) when the registry could not answer: the caller then
// decides nothing (errs.Retryable tells a failure worth retrying from a refused query).
func CheckActive(ctx context.Context, reg Lister, tenant, id string) error {
	if reg == nil {
		return errs.Unavailable("DIRECTORY_UNAVAILABLE", "no registry client to read tenant "+tenant+"'s directory", nil)
	}
	active, hasDirectory, err := ActivePrincipals(ctx, reg, tenant, id)
	switch {
	case err != nil:
		return err
	case active[id], !hasDirectory:
		return nil
	}
	return &NotActiveError{Tenant: tenant, Principal: id}
}

// ActivePrincipals returns which of ids tenant's directory lists as ACTIVE, and whether the tenant
// has a directory at all (any principal, ACTIVE or DEPARTED). It asks for the ids by name (one
// request per 100 ids, however large the directory). A registry that does not know that filter
// answers with a page of the whole directory (a next page token), and one that refuses an id it
// cannot hold answers InvalidArgument: the directory is then read in pages ordered by id, up to the
// greatest of ids. Whether the tenant has a directory costs one more request when none of ids is
// ACTIVE. Errors wrap the registry's (a gRPC status), so errs.Retryable classifies them.
func ActivePrincipals(ctx context.Context, reg Lister, tenant string, ids ...string) (map[string]bool, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	defer cancel()
	parent := "tenants/" + tenant
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	active := map[string]bool{}
	if len(ids) > 0 {
		byName, err := activeByName(ctx, reg, parent, ids, active)
		if err != nil {
			return nil, false, err
		}
		if !byName {
			clear(active)
			if err := activeByPaging(ctx, reg, parent, ids, active); err != nil {
				return nil, false, err
			}
		}
	}
	if len(active) > 0 {
		return active, true, nil
	}
	page, err := reg.ListPrincipals(ctx, &registryv1.ListPrincipalsRequest{Parent: parent, PageSize: 1})
	if err != nil {
		return nil, false, fmt.Errorf("registry.ListPrincipals %s: %w", parent, err)
	}
	return active, len(page.GetPrincipals()) > 0, nil
}

// activeByName asks for ids (sorted, distinct) by name and marks those ACTIVE in active. It reports
// false when the registry answered without filtering by name (a next page token) or refused the ids
// as arguments, so the caller pages instead.
func activeByName(ctx context.Context, reg Lister, parent string, ids []string, active map[string]bool) (bool, error) {
	for chunk := range slices.Chunk(ids, maxIDsPerRequest) {
		resp, err := reg.ListPrincipals(ctx, &registryv1.ListPrincipalsRequest{Parent: parent, Ids: chunk,
			Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE})
		switch {
		case errs.Is(err, errs.KindInvalidArgument):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("registry.ListPrincipals %s: %w", parent, err)
		case resp.GetNextPageToken() != "":
			return false, nil
		}
		mark(active, chunk, resp.GetPrincipals())
	}
	return true, nil
}

// activeByPaging reads parent's ACTIVE principals in pages ordered by id, up to the greatest of ids
// (sorted, distinct), and marks those of ids in active.
func activeByPaging(ctx context.Context, reg Lister, parent string, ids []string, active map[string]bool) error {
	last := ids[len(ids)-1]
	token := ""
	for {
		resp, err := reg.ListPrincipals(ctx, &registryv1.ListPrincipalsRequest{Parent: parent, PageSize: pageSize, PageToken: token,
			Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE})
		if err != nil {
			return fmt.Errorf("registry.ListPrincipals %s: %w", parent, err)
		}
		ps := resp.GetPrincipals()
		mark(active, ids, ps)
		token = resp.GetNextPageToken()
		if len(active) == len(ids) || token == "" || len(ps) == 0 || ps[len(ps)-1].GetId() >= last {
			return nil
		}
	}
}

// mark records in active those of ps that are ACTIVE and among ids (sorted).
func mark(active map[string]bool, ids []string, ps []*registryv1.Principal) {
	for _, p := range ps {
		if _, found := slices.BinarySearch(ids, p.GetId()); found && p.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
			active[p.GetId()] = true
		}
	}
}

// IsNotActive reports whether err says a principal is not ACTIVE in its tenant's directory.
func IsNotActive(err error) bool {
	var na *NotActiveError
	return errors.As(err, &na)
}
