package registry

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// SystemTenant is the reserved tenant of the platform's own identities; it is never created through
// the API and never holds agents.
const SystemTenant = "system"

// Tenant is the write model of one tenant.
type Tenant struct {
	// ID is the tenant id.
	ID string
	// Version is the stream sequence of the last event; 0 if the tenant does not exist.
	Version uint64

	view    *registryv1.Tenant
	handled map[string]bool
}

// NewTenant returns the empty aggregate of a tenant that has no events yet.
func NewTenant(id string) *Tenant {
	return &Tenant{ID: id, handled: map[string]bool{}}
}

// LoadTenant folds events, in order, into the aggregate.
func LoadTenant(id string, events []eventstore.Event) (*Tenant, error) {
	t := NewTenant(id)
	for _, e := range events {
		if err := t.Apply(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Apply folds one event into the aggregate.
func (t *Tenant) Apply(e eventstore.Event) error {
	view, err := foldTenant(t.view, e)
	if err != nil {
		return err
	}
	t.view, t.Version = view, e.Sequence
	if e.Metadata.CausationID != "" {
		t.handled[e.Metadata.CausationID] = true
	}
	return nil
}

// Exists reports whether the tenant has been created.
func (t *Tenant) Exists() bool { return t.view != nil }

// View returns a copy of the tenant as the read model shows it, nil if it does not exist.
func (t *Tenant) View() *registryv1.Tenant {
	if t.view == nil {
		return nil
	}
	return proto.CloneOf(t.view)
}

// Handled reports whether the command with idempotency key key has already produced an event.
func (t *Tenant) Handled(key string) bool { return t.handled[key] }

// foldTenant applies one event to a tenant's view and returns the new view; cur is not modified.
func foldTenant(cur *registryv1.Tenant, e eventstore.Event) (*registryv1.Tenant, error) {
	switch e.Type {
	case EventTenantCreated:
		if cur != nil {
			return nil, fmt.Errorf("registry: second creation %s of tenant %s", e.ID, cur.GetTenantId())
		}
		d, err := eventstore.DecodeAs[*registryv1.TenantCreated](e)
		if err != nil {
			return nil, err
		}
		next := d.GetTenant()
		if next == nil {
			return nil, fmt.Errorf("registry: tenant creation %s without a tenant", e.ID)
		}
		next.CreateTime = timestamppb.New(e.Time)
		return next, nil
	case EventDirectorySynced: // the directory's own read model folds it (directory.go)
		if cur == nil {
			return nil, fmt.Errorf("registry: directory sync %s of tenant %s that was never created", e.ID, e.AggregateID)
		}
		return cur, nil
	default:
		return nil, fmt.Errorf("registry: unknown tenant event type %q (event %s, seq %s)", e.Type, e.ID, strconv.FormatUint(e.Sequence, 10))
	}
}

// CreateTenant asks for a new tenant.
type CreateTenant struct {
	// TenantID is the id to create.
	TenantID string
	// DisplayName is the human-readable name; the id when empty.
	DisplayName string
	// RequestID is the idempotency key.
	RequestID string
}

func (c CreateTenant) validate() error {
	if !ValidTenantID(c.TenantID) {
		return errs.InvalidArgument("tenant_id", "must be 2 to 63 lowercase letters, digits and dashes, starting with a letter")
	}
	if c.TenantID == SystemTenant {
		return errs.InvalidArgument("tenant_id", `"system" is reserved for the platform's own identities`)
	}
	if err := checkText("display_name", c.DisplayName, false, maxDisplayName); err != nil {
		return err
	}
	return checkRequestID(c.RequestID)
}

// Create decides the creation of the tenant; an existing tenant is AlreadyExists TENANT_EXISTS.
func (t *Tenant) Create(c CreateTenant) (*Change, error) {
	if t.Exists() {
		return nil, errs.AlreadyExists("TENANT_EXISTS", "tenant "+t.ID+" already exists").WithMetadata("tenant", t.ID)
	}
	name := c.DisplayName
	if name == "" {
		name = t.ID
	}
	ch := TenantCreated(&registryv1.Tenant{Name: TenantName(t.ID), TenantId: t.ID, DisplayName: name})
	return &ch, nil
}
