package registry

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// EventDirectorySynced records principals a directory sync added or changed
// (registryv1.DirectorySynced, on the tenant aggregate).
const EventDirectorySynced = "tenant.directory_synced"

// DirectoryProjectionName names the tenants' directories read model; the suffix is its version.
const DirectoryProjectionName = "registry-directory-v1"

// Limits of the tenant directory.
const (
	// MaxSyncPrincipals is how many principals one SyncDirectory request may carry.
	MaxSyncPrincipals = 10_000
	// MaxDirectoryPrincipals is how many principals one tenant's directory may hold.
	MaxDirectoryPrincipals = 1_000_000
	// maxPrincipalID bounds a principal id (as Agent.owner and Agent.sponsor).
	maxPrincipalID = maxOwner
	// maxPrincipalName bounds a principal's display name.
	maxPrincipalName = 200
	// syncChunk is how many principals one directory_synced event carries at most, so that an event
	// stays well below the NATS max_payload (1 MB) whatever the ids and names.
	syncChunk = 1_000
	// defaultPrincipalPage and maxPrincipalPage bound ListPrincipals pages.
	defaultPrincipalPage = 100
	maxPrincipalPage     = 1000
)

// principalIDRE is a principal id: a person's address or login (`alice@corp.example`) or a team
// (`team:payments`): letters, digits and `._%+@:/-`, starting with a letter or digit.
var principalIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._%+@:/-]*$`)

// TeamPrefix starts the id of a team; a principal without a kind is a team when its id has it and a
// person otherwise.
const TeamPrefix = "team:"

// ValidatePrincipalID checks the form of a principal id: 1 to 200 letters, digits and `._%+@:/-`,
// starting with a letter or digit. Errors are InvalidArgument on field.
func ValidatePrincipalID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "is required")
	case len(id) > maxPrincipalID:
		return invalid(field, fmt.Sprintf("must be at most %d characters", maxPrincipalID))
	case !principalIDRE.MatchString(id):
		return invalid(field, fmt.Sprintf("%q must be letters, digits and ._%%+@:/- starting with a letter or digit", printable(id)))
	}
	return nil
}

// principal is one entry of a directory, compact: about 48 bytes plus the id and display name (and
// the map entry and the sorted id list of the projection).
type principal struct {
	name    string
	kind    registryv1.PrincipalKind
	status  registryv1.PrincipalStatus
	updated int64 // unix nanoseconds
}

// directory is one tenant's directory: principals by id.
type directory map[string]principal

// apply folds one directory_synced event into d.
func (d directory) apply(e eventstore.Event, msg *registryv1.DirectorySynced) {
	for _, p := range msg.GetPrincipals() {
		d[p.GetId()] = principal{name: p.GetDisplayName(), kind: p.GetKind(), status: p.GetStatus(), updated: e.Time.UnixNano()}
	}
}

func (p principal) proto(id string) *registryv1.Principal {
	return &registryv1.Principal{Id: id, Kind: p.kind, DisplayName: p.name, Status: p.status, UpdateTime: timestamppb.New(time.Unix(0, p.updated).UTC())}
}

// decodeDirectorySynced decodes a directory_synced event and re-checks what a projection relies on:
// the event is its tenant's own, and every principal id is well-formed.
func decodeDirectorySynced(e eventstore.Event) (*registryv1.DirectorySynced, error) {
	msg, err := eventstore.DecodeAs[*registryv1.DirectorySynced](e)
	if err != nil {
		return nil, err
	}
	if e.AggregateID != e.Metadata.Tenant || msg.GetTenant() != e.Metadata.Tenant {
		return nil, eventstore.Permanent(fmt.Errorf("registry: directory sync %s refused: tenant %q on aggregate %s of tenant %s", e.ID, msg.GetTenant(), e.AggregateID, e.Metadata.Tenant))
	}
	for _, p := range msg.GetPrincipals() {
		if ValidatePrincipalID("principal", p.GetId()) != nil {
			return nil, eventstore.Permanent(fmt.Errorf("registry: directory sync %s refused: malformed principal id %q", e.ID, printable(p.GetId())))
		}
	}
	return msg, nil
}

// DirectoryProjection is the read model of every tenant's directory (people and teams), built from
// the TENANTS stream. A tenant that never synced a directory has none, and then every principal may
// own and sponsor its agents. Memory: about 100 bytes per principal plus its id and display name.
// It implements Directory and is safe for concurrent use; Apply is called by one Runner.
type DirectoryProjection struct {
	mu      sync.RWMutex
	tenants map[string]directory
	ids     map[string][]string // each tenant's principal ids, sorted
}

var _ eventstore.Projection = (*DirectoryProjection)(nil)

// NewDirectoryProjection returns an empty directories read model.
func NewDirectoryProjection() *DirectoryProjection {
	return &DirectoryProjection{tenants: map[string]directory{}, ids: map[string][]string{}}
}

// Name implements eventstore.Projection.
func (p *DirectoryProjection) Name() string { return DirectoryProjectionName }

// Apply implements eventstore.Projection: it folds directory_synced events; other events are ignored.
func (p *DirectoryProjection) Apply(_ context.Context, e eventstore.Event) error {
	if e.AggregateType != AggregateTenant || e.Type != EventDirectorySynced {
		return nil
	}
	msg, err := decodeDirectorySynced(e)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.tenants[e.AggregateID]
	if d == nil {
		d = directory{}
		p.tenants[e.AggregateID] = d
	}
	ids, added := p.ids[e.AggregateID], false
	for _, pr := range msg.GetPrincipals() {
		if _, ok := d[pr.GetId()]; !ok {
			ids, added = append(ids, pr.GetId()), true
		}
	}
	d.apply(e, msg)
	if added {
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	p.ids[e.AggregateID] = ids
	return nil
}

// HasDirectory reports whether tenant has synced a directory.
func (p *DirectoryProjection) HasDirectory(tenant string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.tenants[tenant] != nil
}

// CheckPrincipal implements Directory: with a directory for tenant, id must be one of its ACTIVE
// principals, else InvalidArgument on field; without one every id passes.
func (p *DirectoryProjection) CheckPrincipal(tenant, field, id string) error {
	if p == nil {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := p.tenants[tenant]
	if d == nil {
		return nil
	}
	if e, ok := d[id]; ok && e.status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
		return nil
	}
	return invalid(field, fmt.Sprintf("%q is not an active principal of tenant %s's directory", printable(id), tenant))
}

// Principal returns one principal of tenant's directory.
func (p *DirectoryProjection) Principal(tenant, id string) (*registryv1.Principal, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	e, ok := p.tenants[tenant][id]
	if !ok {
		return nil, false
	}
	return e.proto(id), true
}

// List returns up to n principals of tenant with an id after after, ordered by id, of the given
// status (UNSPECIFIED: all), and whether more follow.
func (p *DirectoryProjection) List(tenant, after string, status registryv1.PrincipalStatus, n int) ([]*registryv1.Principal, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d, ids := p.tenants[tenant], p.ids[tenant]
	i, _ := slices.BinarySearch(ids, after)
	var out []*registryv1.Principal
	for ; i < len(ids); i++ {
		id := ids[i]
		if id <= after {
			continue
		}
		e := d[id]
		if status != registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED && e.status != status {
			continue
		}
		if len(out) == n {
			return out, true
		}
		out = append(out, e.proto(id))
	}
	return out, false
}

// SyncDirectory records a tenant's people and teams.
type SyncDirectory struct {
	// Tenant whose directory it is.
	Tenant string
	// Principals to add or update (at most MaxSyncPrincipals); a kind left UNSPECIFIED is TEAM for
	// ids starting with TeamPrefix and PERSON otherwise, a status left UNSPECIFIED is ACTIVE.
	Principals []*registryv1.Principal
	// Replace makes the request the whole directory: ACTIVE principals it does not list become
	// DEPARTED.
	Replace bool
	// AllowMassDeparture lets a replace depart more principals than checkMassDeparture allows.
	AllowMassDeparture bool
	// RequestID is the idempotency key.
	RequestID string
}

// SyncResult is what a directory sync changed.
type SyncResult struct {
	// Added counts the principals new to the directory.
	Added int
	// Updated counts the principals whose kind, name or status changed.
	Updated int
	// Departed lists the principals that became DEPARTED, ordered by id.
	Departed []string
	// AgentsOrphaned counts the non-terminal agents the departed principals own or sponsor at
	// decision time (each is marked orphaned asynchronously).
	AgentsOrphaned int
}

// normalize validates c and returns its principals with kind and status filled in.
func (c SyncDirectory) normalize() ([]*registryv1.Principal, error) {
	if len(c.Principals) > MaxSyncPrincipals {
		return nil, invalid("principals", fmt.Sprintf("at most %d principals per request (got %d): split the directory into several merging requests", MaxSyncPrincipals, len(c.Principals)))
	}
	if len(c.Principals) == 0 && !c.Replace {
		return nil, invalid("principals", "at least one principal is required (an empty directory is a replace)")
	}
	if err := checkRequestID(c.RequestID); err != nil {
		return nil, err
	}
	out := make([]*registryv1.Principal, len(c.Principals))
	seen := make(map[string]bool, len(c.Principals))
	for i, in := range c.Principals {
		field := fmt.Sprintf("principals[%d]", i)
		if in == nil {
			return nil, invalid(field, "is required")
		}
		if err := ValidatePrincipalID(field+".id", in.GetId()); err != nil {
			return nil, err
		}
		if seen[in.GetId()] {
			return nil, invalid(field+".id", fmt.Sprintf("%q is listed twice", printable(in.GetId())))
		}
		seen[in.GetId()] = true
		if err := checkText(field+".display_name", in.GetDisplayName(), false, maxPrincipalName); err != nil {
			return nil, err
		}
		p := &registryv1.Principal{Id: in.GetId(), Kind: in.GetKind(), DisplayName: in.GetDisplayName(), Status: in.GetStatus()}
		switch {
		case registryv1.PrincipalKind_name[int32(p.Kind)] == "":
			return nil, invalid(field+".kind", "is not a known value (PERSON or TEAM)")
		case p.Kind == registryv1.PrincipalKind_PRINCIPAL_KIND_UNSPECIFIED && strings.HasPrefix(p.Id, TeamPrefix):
			p.Kind = registryv1.PrincipalKind_PRINCIPAL_KIND_TEAM
		case p.Kind == registryv1.PrincipalKind_PRINCIPAL_KIND_UNSPECIFIED:
			p.Kind = registryv1.PrincipalKind_PRINCIPAL_KIND_PERSON
		}
		switch {
		case registryv1.PrincipalStatus_name[int32(p.Status)] == "":
			return nil, invalid(field+".status", "is not a known value (ACTIVE or DEPARTED)")
		case p.Status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED:
			p.Status = registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE
		}
		out[i] = p
	}
	return out, nil
}

// directoryState is a tenant's directory as its events left it, with the results of the syncs
// already recorded, by idempotency key.
type directoryState struct {
	dir     directory
	results map[string]*SyncResult
}

// loadDirectory folds a tenant's events into its directory; an event's causation id is the key of
// the request that wrote it followed by `#` and the event's digest (chunkKey).
func loadDirectory(events []eventstore.Event) (*directoryState, error) {
	st := &directoryState{dir: directory{}, results: map[string]*SyncResult{}}
	for _, e := range events {
		if e.Type != EventDirectorySynced {
			continue
		}
		msg, err := eventstore.DecodeAs[*registryv1.DirectorySynced](e)
		if err != nil {
			return nil, err
		}
		key := e.Metadata.CausationID
		if i := strings.LastIndexByte(key, '#'); i >= 0 {
			key = key[:i]
		}
		r := st.results[key]
		if r == nil {
			r = &SyncResult{}
			st.results[key] = r
		}
		for _, p := range msg.GetPrincipals() {
			if _, ok := st.dir[p.GetId()]; ok {
				r.Updated++
			} else {
				r.Added++
			}
		}
		r.Departed = append(r.Departed, msg.GetDeparted()...)
		st.dir.apply(e, msg)
	}
	return st, nil
}

// diff returns the principals of in that the directory does not hold as they are (ordered by id),
// and with replace also every ACTIVE principal in does not list, DEPARTED; and what that changes.
func (st *directoryState) diff(in []*registryv1.Principal, replace bool) ([]*registryv1.Principal, SyncResult) {
	var changed []*registryv1.Principal
	var res SyncResult
	listed := make(map[string]bool, len(in))
	for _, p := range in {
		listed[p.GetId()] = true
		cur, ok := st.dir[p.GetId()]
		switch {
		case !ok:
			res.Added++
		case cur.kind == p.GetKind() && cur.name == p.GetDisplayName() && cur.status == p.GetStatus():
			continue
		default:
			res.Updated++
		}
		changed = append(changed, p)
		if p.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED && (!ok || cur.status != p.GetStatus()) {
			res.Departed = append(res.Departed, p.GetId())
		}
	}
	if replace {
		for id, cur := range st.dir {
			if !listed[id] && cur.status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE {
				changed = append(changed, &registryv1.Principal{Id: id, Kind: cur.kind, DisplayName: cur.name, Status: registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED})
				res.Updated++
				res.Departed = append(res.Departed, id)
			}
		}
	}
	slices.SortFunc(changed, func(a, b *registryv1.Principal) int { return strings.Compare(a.GetId(), b.GetId()) })
	slices.Sort(res.Departed)
	return changed, res
}

// syncChunks splits the changed principals into the events to append.
func syncChunks(tenant string, changed []*registryv1.Principal) []*registryv1.DirectorySynced {
	var out []*registryv1.DirectorySynced
	for chunk := range slices.Chunk(changed, syncChunk) {
		msg := &registryv1.DirectorySynced{Tenant: tenant, Principals: chunk}
		for _, p := range chunk {
			if p.GetStatus() == registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED {
				msg.Departed = append(msg.Departed, p.GetId())
			}
		}
		out = append(out, msg)
	}
	return out
}

// chunkKey is the idempotency key of one event of a sync: the request's key and a digest of the
// event's content, so that a retry that finds part of its request recorded appends the rest under
// keys of their own.
func chunkKey(key string, msg *registryv1.DirectorySynced) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return key + "#" + base64.RawURLEncoding.EncodeToString(sum[:12]), nil
}

// SyncDirectory records principals in a tenant's directory (events tenant.directory_synced, at
// most syncChunk principals each). Only what changes is written: a sync that changes nothing writes
// nothing, and a repeat with the same request id returns what the first one changed. A principal
// that becomes DEPARTED orphans every agent it owns or sponsors (the orphan reactor records
// agent.orphaned per agent).
func (s *Service) SyncDirectory(ctx context.Context, c SyncDirectory, md eventstore.Metadata) (SyncResult, error) {
	if !ValidTenantID(c.Tenant) || c.Tenant == SystemTenant {
		return SyncResult{}, invalid("parent", "must have the form tenants/{tenant} (not the system tenant)")
	}
	in, err := c.normalize()
	if err != nil {
		return SyncResult{}, err
	}
	key := commandKey(cmdSyncDirectory, c.Tenant, c.Tenant, c.RequestID)
	var lastErr error
	for range maxAttempts {
		events, _, err := s.store.Load(ctx, c.Tenant, AggregateTenant, c.Tenant)
		if err != nil {
			return SyncResult{}, storeError(err)
		}
		t, err := LoadTenant(c.Tenant, events)
		if err != nil {
			return SyncResult{}, errs.Internal(err)
		}
		if !t.Exists() {
			return SyncResult{}, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", c.Tenant)
		}
		st, err := loadDirectory(events)
		if err != nil {
			return SyncResult{}, errs.Internal(err)
		}
		changed, res := st.diff(in, c.Replace)
		if len(changed) == 0 {
			if prev, ok := st.results[key]; ok && c.RequestID != "" {
				res = *prev
			}
			res.AgentsOrphaned = s.countOwned(c.Tenant, res.Departed)
			if err := s.wait(ctx, s.directories.runner, t.Version); err != nil {
				return SyncResult{}, err
			}
			return res, nil
		}
		if err := st.checkMassDeparture(c.Tenant, in, res, c.Replace, c.AllowMassDeparture); err != nil {
			return SyncResult{}, err
		}
		if added := res.Added; len(st.dir)+added > MaxDirectoryPrincipals {
			return SyncResult{}, errs.FailedPrecondition("DIRECTORY_FULL",
				fmt.Sprintf("the directory of tenant %s would hold %d principals, more than %d", c.Tenant, len(st.dir)+added, MaxDirectoryPrincipals))
		}
		version := t.Version
		conflict := false
		for _, msg := range syncChunks(c.Tenant, changed) {
			ck, err := chunkKey(key, msg)
			if err != nil {
				return SyncResult{}, errs.Internal(err)
			}
			ev, err := s.append(ctx, c.Tenant, AggregateTenant, c.Tenant, TenantName(c.Tenant), ck, version,
				&Change{Type: EventDirectorySynced, Data: msg}, md)
			if errors.Is(err, eventstore.ErrConflict) {
				lastErr, conflict = err, true
				break
			}
			if err != nil {
				return SyncResult{}, storeError(err)
			}
			if ev.ExpectedVersion != version {
				lastErr, conflict = errStaleRead, true
				break
			}
			version = ev.Sequence
		}
		if conflict {
			continue // decide again on what is recorded now: the chunks written are no longer a change
		}
		if err := s.wait(ctx, s.directories.runner, version); err != nil {
			return SyncResult{}, err
		}
		if prev, ok := st.results[key]; ok && c.RequestID != "" { // an earlier attempt wrote part of it
			res.Added += prev.Added
			res.Updated += prev.Updated
			res.Departed = append(res.Departed, prev.Departed...)
			slices.Sort(res.Departed)
		}
		res.AgentsOrphaned = s.countOwned(c.Tenant, res.Departed)
		return res, nil
	}
	return SyncResult{}, storeError(lastErr)
}

// countOwned counts the non-terminal agents of tenant that the principals own or sponsor.
func (s *Service) countOwned(tenant string, principals []string) int {
	seen := map[string]bool{}
	for _, p := range principals {
		for _, id := range s.agents.AgentsOwnedBy(tenant, p) {
			seen[id] = true
		}
	}
	return len(seen)
}

// Bounds of one ListPrincipalsByID.
const (
	// maxPrincipalIDs bounds the distinct ids.
	maxPrincipalIDs = 100
	// maxRawPrincipalIDs bounds the ids as sent (repeats included), checked before any other work.
	maxRawPrincipalIDs = 1000
	// maxLookupIDBytes bounds one id: the longest owner or sponsor an agent may have (maxOwner
	// characters of up to utf8.UTFMax bytes), so that no agent's owner is refused.
	maxLookupIDBytes = maxOwner * utf8.UTFMax
)

// ListPrincipalsByID returns those of ids that tenant's directory holds, of the given status
// (UNSPECIFIED: all), ordered by id. An id the directory cannot hold (empty, or not of the form
// ValidatePrincipalID accepts, e.g. an agent owner "josé@corp.example") is simply not found: callers
// check agents' owners and sponsors, whose form is looser than a principal id's. More than
// maxRawPrincipalIDs ids, more than maxPrincipalIDs distinct ones or an id longer than
// maxLookupIDBytes bytes is InvalidArgument, the raw count checked before anything else.
func (s *Service) ListPrincipalsByID(_ context.Context, tenant string, status registryv1.PrincipalStatus, ids []string) ([]*registryv1.Principal, error) {
	if registryv1.PrincipalStatus_name[int32(status)] == "" {
		return nil, invalid("status", "is not a known value (ACTIVE or DEPARTED)")
	}
	if len(ids) > maxRawPrincipalIDs {
		return nil, invalid("ids", fmt.Sprintf("names %d ids, at most %d (%d distinct)", len(ids), maxRawPrincipalIDs, maxPrincipalIDs))
	}
	distinct := map[string]bool{}
	for i, id := range ids {
		if len(id) > maxLookupIDBytes {
			return nil, invalid(fmt.Sprintf("ids[%d]", i), fmt.Sprintf("must be at most %d bytes", maxLookupIDBytes))
		}
		distinct[id] = true
		if len(distinct) > maxPrincipalIDs {
			return nil, invalid("ids", fmt.Sprintf("names more than %d distinct principals", maxPrincipalIDs))
		}
	}
	if _, ok := s.tenants.Get(tenant); !ok {
		return nil, errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	out := []*registryv1.Principal{}
	for _, id := range slices.Sorted(maps.Keys(distinct)) {
		p, ok := s.directories.Principal(tenant, id) // the directory holds only well-formed ids
		if ok && (status == registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED || p.GetStatus() == status) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ListPrincipals returns one page of a tenant's directory, ordered by id, and the next page's token.
func (s *Service) ListPrincipals(_ context.Context, tenant string, status registryv1.PrincipalStatus, size int32, token string) ([]*registryv1.Principal, string, error) {
	n := defaultPrincipalPage
	switch {
	case size < 0:
		return nil, "", invalid("page_size", "must not be negative")
	case size > maxPrincipalPage:
		n = maxPrincipalPage
	case size > 0:
		n = int(size)
	}
	if registryv1.PrincipalStatus_name[int32(status)] == "" {
		return nil, "", invalid("status", "is not a known value (ACTIVE or DEPARTED)")
	}
	after := ""
	if token != "" {
		b, err := hex.DecodeString(token)
		if err != nil || len(b) == 0 || ValidatePrincipalID("page_token", string(b)) != nil {
			return nil, "", invalid("page_token", "is not a token returned by this service")
		}
		after = string(b)
	}
	if _, ok := s.tenants.Get(tenant); !ok {
		return nil, "", errs.NotFound("TENANT_NOT_FOUND", "tenant not found").WithMetadata("tenant", tenant)
	}
	out, more := s.directories.List(tenant, after, status, n)
	next := ""
	if more && len(out) > 0 {
		next = hex.EncodeToString([]byte(out[len(out)-1].GetId()))
	}
	return out, next, nil
}

// Directories returns the tenants' directories read model.
func (s *Service) Directories() *DirectoryProjection { return s.directories.DirectoryProjection }

// directories is the service's directory read model with its runner.
type directories struct {
	*DirectoryProjection
	runner *eventstore.Runner
}

// newDirectories builds the directory read model of s and its runner over the TENANTS stream.
func newDirectories(store EventStore) directories {
	p := NewDirectoryProjection()
	return directories{DirectoryProjection: p, runner: store.NewRunner(p, eventstore.StreamTenants, []string{eventstore.AggregateTypeSubject(AggregateTenant)})}
}

const cmdSyncDirectory = "SyncDirectory"
