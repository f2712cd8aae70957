package keys_test

import (
	"errors"
	"testing"
	"time"

	"github.com/agentid/agentid/services/issuer/internal/keys"
)

func TestRingLifecycle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var r keys.Ring
	if err := r.Created(keys.Entry{KeyID: "a", CreateTime: t0}); err != nil {
		t.Fatal(err)
	}
	if c := r.Current(); c == nil || c.KeyID != "a" || !c.ActivateTime.Equal(t0) {
		t.Fatalf("first key: %+v, want CURRENT from its creation", c)
	}
	if !r.RotationDue(t0.Add(30*24*time.Hour), 30*24*time.Hour) || r.RotationDue(t0.Add(time.Hour), 30*24*time.Hour) || r.RotationDue(t0.Add(time.Hour), 0) {
		t.Fatal("RotationDue does not follow the interval")
	}
	for _, tc := range []struct {
		name string
		e    keys.Entry
	}{
		{"second CURRENT", keys.Entry{KeyID: "x", State: keys.StateCurrent}},
		{"RETIRING at creation", keys.Entry{KeyID: "x", State: keys.StateRetiring}},
	} {
		if err := r.Created(tc.e); !errors.Is(err, keys.ErrRing) {
			t.Fatalf("%s: %v, want ErrRing", tc.name, err)
		}
	}
	activate := t0.Add(time.Hour)
	if err := r.Created(keys.Entry{KeyID: "b", State: keys.StateNext, ActivateTime: activate}); err != nil {
		t.Fatal(err)
	}
	if err := r.Created(keys.Entry{KeyID: "c", State: keys.StateNext}); !errors.Is(err, keys.ErrRing) {
		t.Fatalf("second NEXT: %v, want ErrRing", err)
	}
	if r.RotationDue(t0.Add(365*24*time.Hour), time.Hour) {
		t.Fatal("rotation due while a NEXT key exists")
	}
	if due := r.Due(activate.Add(-time.Second)); len(due) != 0 {
		t.Fatalf("due before the activate time: %v", due)
	}
	due := r.Due(activate)
	if len(due) != 1 || due[0] != (keys.Transition{Activate: "b", Previous: "a"}) {
		t.Fatalf("due at the activate time: %v", due)
	}
	if err := r.Removed("a", activate); !errors.Is(err, keys.ErrRing) {
		t.Fatalf("removal of the CURRENT key: %v, want ErrRing", err)
	}
	removeAfter := activate.Add(24 * time.Hour)
	if err := r.Activated("b", "a", activate, removeAfter); err != nil {
		t.Fatal(err)
	}
	if err := r.Activated("b", "a", activate, removeAfter); err != nil {
		t.Fatalf("repeated activation: %v, want no change", err)
	}
	if r.Current().KeyID != "b" || r.Get("a").State != keys.StateRetiring || len(r.Live()) != 2 {
		t.Fatalf("after activation: current %s, a %s", r.Current().KeyID, r.Get("a").State)
	}
	if due := r.Due(removeAfter); len(due) != 1 || due[0].Remove != "a" {
		t.Fatalf("due at the remove time: %v", due)
	}
	if err := r.Removed("a", removeAfter); err != nil {
		t.Fatal(err)
	}
	if a := r.Get("a"); a.State != keys.StateRetired || a.Live() || len(r.Live()) != 1 || len(r.Entries()) != 2 {
		t.Fatalf("after removal: %+v, live %d", a, len(r.Live()))
	}
	if err := r.Resealed("b", "kek-2", []byte("sealed")); err != nil || r.Get("b").KEKID != "kek-2" {
		t.Fatalf("re-seal: %v, kek %s", err, r.Get("b").KEKID)
	}
	if err := r.Resealed("zz", "kek-2", nil); !errors.Is(err, keys.ErrRing) {
		t.Fatalf("re-seal of an unknown key: %v, want ErrRing", err)
	}
}
