package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
)

func TestEventsFailed(t *testing.T) {
	n := testkit.StartNATS(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := store.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	ev, err := store.Append(t.Context(), eventstore.Append{
		Tenant: "acme", AggregateType: "agent", AggregateID: "bot", ExpectedVersion: 0, IdempotencyKey: "k1",
		Type: "agent.registered", Subject: "tenants/acme/agents/bot", Data: wrapperspb.String("x"),
		Metadata: eventstore.Metadata{Actor: eventstore.Actor{ID: "alice", Kind: eventstore.ActorHuman}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- store.Consume(ctx, "cli-test", eventstore.StreamAgents, nil, func(context.Context, eventstore.Event) error {
			return eventstore.Permanent(errors.New("cannot provision"))
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	key := eventstore.FailedEventKey("cli-test", eventstore.StreamAgents, ev.Sequence)
	deadline := time.Now().Add(testkit.DefaultWait)
	for {
		if list, err := store.FailedEvents(t.Context()); err == nil && len(list) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failure was not recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}

	dir := t.TempDir()
	nats := "--nats-url=" + n.URL()
	code, out, errOut := run(t, dir, "events", "failed", "list", "-o", "json", nats)
	var listed []eventstore.FailedEvent
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].Key != key || listed[0].Error != "cannot provision" {
		t.Fatalf("list -o json = %d %q %q, want the entry %s", code, out, errOut, key)
	}
	if code, out, _ := run(t, dir, "events", "failed", "list", nats); code != 0 || !strings.Contains(out, key) || !strings.Contains(out, "cannot provision") {
		t.Errorf("list = %d %q, want a table row for %s", code, out, key)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"retry without a key", []string{"retry"}, "give the KEY of an entry"},
		{"key and --all", []string{"clear", key, "--all"}, "give a KEY or --all, not both"},
		{"filter without --all", []string{"clear", key, "--handler", "x"}, "--handler and --stream select entries for --all"},
		{"unknown key", []string{"retry", "nobody.AGENTS.1"}, "no such failed event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, dir, append([]string{"events", "failed", nats}, tt.args...)...)
			if code == 0 || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want an error containing %q", code, errOut, tt.wantErr)
			}
		})
	}
	if code, out, errOut := run(t, dir, "events", "failed", "retry", key, nats); code != 0 || out != key+" retry requested\n" {
		t.Errorf("retry = %d %q %q", code, out, errOut)
	}
	if code, out, errOut := run(t, dir, "events", "failed", "clear", "--all", "--handler", "someone-else", nats); code != 0 || out != "0 entries cleared\n" {
		t.Errorf("clear --all --handler someone-else = %d %q %q", code, out, errOut)
	}
	if code, out, errOut := run(t, dir, "events", "failed", "clear", "--all", "--handler", "cli-test", nats); code != 0 || out != "1 entries cleared\n" {
		t.Errorf("clear --all --handler cli-test = %d %q %q", code, out, errOut)
	}
	if code, out, _ := run(t, dir, "events", "failed", "list", "-o", "json", nats); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("list after clear = %d %q, want []", code, out)
	}
}
