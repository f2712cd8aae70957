package eventstore_test

import (
	"errors"
	"testing"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
)

// TestLostReplyRetriedWithTheSameKeyStoresOnce loses the reply of an append that JetStream stored: the
// caller sees an error, retries with the same idempotency key and gets the stored event back; the
// aggregate holds it once.
func TestLostReplyRetriedWithTheSameKeyStoresOnce(t *testing.T) {
	e := newEnv(t)
	a := agentAppend("acme", "a1", "registered", 0, "v1")
	disable, err := failpoint.Enable(failpoint.AppendBeforeReply, "1*error")
	if err != nil {
		t.Fatal(err)
	}
	defer disable()
	if _, err := e.store.Append(t.Context(), a); !errors.Is(err, failpoint.ErrInjected) {
		t.Fatalf("first append = %v, want the injected lost reply", err)
	}
	got, err := e.store.Append(t.Context(), a)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	evs, version, err := e.store.Load(t.Context(), "acme", "agent", "a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].ID != got.ID || version != got.Sequence {
		t.Fatalf("aggregate holds %d events (version %d), want the retried one once (%s at %d)", len(evs), version, got.ID, got.Sequence)
	}
	if _, err := e.store.Append(t.Context(), agentAppend("acme", "a1", "renamed", 0, "v2")); !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("an append expecting version 0 after the stored event = %v, want a conflict", err)
	}
}
