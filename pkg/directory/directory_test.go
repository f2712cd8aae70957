package directory_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/agentid/agentid/pkg/directory"
	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

const (
	active   = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
	departed = registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED
)

// registry modes: how the fake answers a request naming ids.
const (
	byName  = iota // filters by ids, as the registry does
	ignores        // does not know the filter: pages of the whole directory
	strict         // an older registry: InvalidArgument for an id outside [A-Za-z0-9._%+@:/-]
)

var strictID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._%+@:/-]*$`)

// registry serves tenant acme's directory (ordered by id) in one of the modes, or fails every
// request with err. It counts the requests.
type registry struct {
	principals []*registryv1.Principal
	mode       int
	err        error
	calls      *atomic.Int32
}

func newRegistry(mode int, ps ...*registryv1.Principal) registry {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b *registryv1.Principal) int { return strings.Compare(a.GetId(), b.GetId()) })
	return registry{principals: ps, mode: mode, calls: new(atomic.Int32)}
}

func (r registry) ListPrincipals(_ context.Context, in *registryv1.ListPrincipalsRequest, _ ...grpc.CallOption) (*registryv1.ListPrincipalsResponse, error) {
	r.calls.Add(1)
	if r.err != nil {
		return nil, errs.ToStatus(r.err).Err()
	}
	if in.GetParent() != "tenants/acme" {
		return nil, errs.ToStatus(errs.NotFound("TENANT_NOT_FOUND", "tenant not found")).Err()
	}
	match := func(p *registryv1.Principal) bool {
		return in.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED || p.GetStatus() == in.GetStatus()
	}
	resp := &registryv1.ListPrincipalsResponse{}
	if ids := in.GetIds(); len(ids) > 0 && r.mode != ignores {
		if len(ids) > 100 {
			return nil, errs.ToStatus(errs.InvalidArgument("ids", "at most 100")).Err()
		}
		for i, id := range ids {
			if r.mode == strict && !strictID.MatchString(id) {
				return nil, errs.ToStatus(errs.InvalidArgument(fmt.Sprintf("ids[%d]", i), "malformed")).Err()
			}
		}
		for _, p := range r.principals {
			if slices.Contains(ids, p.GetId()) && match(p) {
				resp.Principals = append(resp.Principals, p)
			}
		}
		return resp, nil
	}
	size := int(in.GetPageSize())
	if size <= 0 {
		size = 100
	}
	for _, p := range r.principals {
		if p.GetId() > in.GetPageToken() && match(p) {
			if len(resp.Principals) == size {
				resp.NextPageToken = resp.Principals[size-1].GetId()
				break
			}
			resp.Principals = append(resp.Principals, p)
		}
	}
	return resp, nil
}

// every7th is n ids of bigDirectory: user00000, user00007, ...
func every7th(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("user%05d@acme.example", i*7))
	}
	return ids
}

func principal(id string, st registryv1.PrincipalStatus) *registryv1.Principal {
	return &registryv1.Principal{Id: id, Status: st}
}

// bigDirectory is n ACTIVE principals user00000@acme.example ... plus those of extra.
func bigDirectory(n int, extra ...*registryv1.Principal) []*registryv1.Principal {
	out := slices.Clone(extra)
	for i := range n {
		out = append(out, principal(fmt.Sprintf("user%05d@acme.example", i), active))
	}
	return out
}

// TestActivePrincipals: which of the ids the directory lists as ACTIVE, and whether the tenant has a
// directory, are the same whether the registry filters by name, ignores the filter (paging) or
// refuses ids it cannot hold (an older registry: paging too); a tenant without principals has no
// directory.
func TestActivePrincipals(t *testing.T) {
	dir := bigDirectory(3000, principal("bob@acme.example", departed), principal("carol@acme.example", active),
		principal("team:payments", active))
	for _, tc := range []struct {
		name      string
		directory []*registryv1.Principal
		ids       []string
		want      []string
		wantDir   bool
	}{
		{"active and departed", dir, []string{"carol@acme.example", "bob@acme.example"}, []string{"carol@acme.example"}, true},
		{"departed only", dir, []string{"bob@acme.example"}, nil, true},
		{"unknown", dir, []string{"mallory@acme.example"}, nil, true},
		{"ids a strict registry refuses", dir, []string{"josé@corp.example", "o'brien@corp.example", "carol@acme.example"}, []string{"carol@acme.example"}, true},
		{"an odd id alone", dir, []string{"o'brien@corp.example"}, nil, true},
		{"repeated ids", dir, []string{"team:payments", "team:payments", "bob@acme.example"}, []string{"team:payments"}, true},
		{"late in a large directory", dir, []string{"user02999@acme.example"}, []string{"user02999@acme.example"}, true},
		{"more ids than one request names", dir, every7th(250), every7th(250), true},
		{"departed directory", []*registryv1.Principal{principal("bob@acme.example", departed)}, []string{"bob@acme.example"}, nil, true},
		{"no directory", nil, []string{"bob@acme.example", "josé@corp.example"}, nil, false},
		{"no ids", dir, nil, nil, true},
	} {
		for mode, name := range []string{"filters by name", "ignores the filter", "refuses odd ids"} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				reg := newRegistry(mode, tc.directory...)
				got, hasDir, err := directory.ActivePrincipals(t.Context(), reg, "acme", tc.ids...)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for id, ok := range got {
					if ok {
						ids = append(ids, id)
					}
				}
				slices.Sort(ids)
				want := slices.Sorted(slices.Values(tc.want))
				if !slices.Equal(ids, want) || hasDir != tc.wantDir {
					t.Fatalf("active %v (directory %v), want %v (directory %v)", ids, hasDir, want, tc.wantDir)
				}
			})
		}
	}
}

// TestActivePrincipalsAsksByName: against a registry that filters by name, a check of one principal
// costs one request when it is ACTIVE and two (the has-directory probe) when it is not, however large
// the directory.
func TestActivePrincipalsAsksByName(t *testing.T) {
	reg := newRegistry(byName, bigDirectory(5000, principal("bob@acme.example", departed))...)
	for _, tc := range []struct {
		id        string
		wantCalls int32
	}{
		{"user04321@acme.example", 1},
		{"bob@acme.example", 2},
		{"josé@corp.example", 2},
	} {
		reg.calls.Store(0)
		if _, _, err := directory.ActivePrincipals(t.Context(), reg, "acme", tc.id); err != nil {
			t.Fatal(err)
		}
		if n := reg.calls.Load(); n != tc.wantCalls {
			t.Errorf("%s: %d requests, want %d", tc.id, n, tc.wantCalls)
		}
	}
}

// TestCheckActive: an ACTIVE principal and any principal of a tenant without a directory pass; a
// departed or unknown one is a NotActiveError naming it and the tenant; a registry that cannot be
// asked is an error that is no NotActiveError, retryable when the registry is down and not when it
// refuses the query.
func TestCheckActive(t *testing.T) {
	dir := []*registryv1.Principal{principal("alice@acme.example", active), principal("bob@acme.example", departed)}
	down := newRegistry(byName)
	down.err = errs.Unavailable("DOWN", "registry down", nil)
	refusing := newRegistry(byName)
	refusing.err = errs.PermissionDenied("DENIED", "not for you")
	for _, tc := range []struct {
		name          string
		reg           directory.Lister
		id            string
		wantNotActive bool
		wantErr       bool
		wantRetryable bool
	}{
		{"active", newRegistry(byName, dir...), "alice@acme.example", false, false, false},
		{"departed", newRegistry(byName, dir...), "bob@acme.example", true, true, false},
		{"unknown", newRegistry(strict, dir...), "josé@corp.example", true, true, false},
		{"no directory", newRegistry(byName), "bob@acme.example", false, false, false},
		{"registry down", down, "alice@acme.example", false, true, true},
		{"registry refuses", refusing, "alice@acme.example", false, true, false},
		{"no registry", nil, "alice@acme.example", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := directory.CheckActive(t.Context(), tc.reg, "acme", tc.id)
			switch {
			case (err != nil) != tc.wantErr:
				t.Fatalf("error %v, want an error: %v", err, tc.wantErr)
			case directory.IsNotActive(err) != tc.wantNotActive:
				t.Fatalf("error %v, want a NotActiveError: %v", err, tc.wantNotActive)
			case tc.wantNotActive:
				want := tc.id + " is not an ACTIVE principal of tenant acme's directory: a departed or unknown principal holds no owner rights"
				if err.Error() != want {
					t.Fatalf("error %q, want %q", err, want)
				}
			case err != nil && errs.Retryable(err) != tc.wantRetryable:
				t.Fatalf("error %v retryable %v, want %v", err, errs.Retryable(err), tc.wantRetryable)
			}
		})
	}
}
