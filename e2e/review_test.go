package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/names"
	"github.com/agentid/agentid/pkg/natsauth"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// TestAccessReviewEndToEnd drives an access review through the running platform on the real engines:
// an ACTIVE agent with scopes docs.search and docs.read gets tokens asking only for docs.search; the
// monitor records the token requests with their scopes (its admission's policy decision, which
// carries both scopes, uses none); a campaign started with agentctl opens the agent's review with
// docs.read unused; the owner certifies with agentctl (their own approval token) without keeping
// docs.read, so it is removed when the review closes (agent.scopes_removed); a token request for
// docs.read is then refused with invalid_scope while docs.search still works; the evidence events
// of the review are on stream LIFECYCLE.
//
// A review calls a scope unused only when the monitor's telemetry covers its whole usage window
// (coverage_start_time at or before the window's start); a fresh platform's covers minutes. The
// test gives the tenant two days of telemetry history as a platform that ran that long has it: one
// access batch of a resource server, dated two days back, on TELEMETRY, published under the
// monitor's NATS identity as RecordAccess stores batches (RecordAccess itself refuses events dated
// more than an hour back, so history cannot be reported through it), and runs the campaign with a
// usage window of one day.
func TestAccessReviewEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := startDeprovEnv(t, ctx)
	historyStart := time.Now().UTC().Add(-48 * time.Hour)
	seedTelemetryHistory(t, ctx, e, "default", historyStart)
	e.staff(t, ctx, "olivia", "owner")
	analyst := e.staff(t, ctx, "e2e-review-analyst", "analyst")
	a := e.registerWithScopes(t, ctx, "e2e-review", "olivia", "docs.search", "docs.read")
	e.waitAgentState(t, ctx, a, registryv1.AgentState_AGENT_STATE_ACTIVE)

	// Tokens for docs.search only; the monitor sees the requests with their scopes.
	for range 3 {
		a.token(t, ctx)
	}
	tok, err := analyst.Token()
	if err != nil {
		t.Fatal(err)
	}
	monitor := monitorv1.NewMonitorServiceClient(e.p.dial(t, tok.AccessToken))
	waitFor(t, ctx, "the monitor's usage of "+a.name, func() (bool, error) {
		u, err := monitor.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{Agent: a.name, StartTime: timestamppb.New(time.Now().Add(-time.Hour))})
		if err != nil {
			return false, err
		}
		used := map[string]int64{}
		for _, s := range u.GetScopes() {
			used[s.GetValue()] = s.GetCount()
		}
		return used["docs.search"] >= 3 && used["docs.read"] == 0, fmt.Errorf("scopes used %v", used)
	})
	// The monitor's telemetry of the tenant starts with the history: it covers a one-day window.
	waitFor(t, ctx, "the monitor's telemetry coverage to reach back two days", func() (bool, error) {
		u, err := monitor.GetAgentUsage(ctx, &monitorv1.GetAgentUsageRequest{Agent: a.name, StartTime: timestamppb.New(time.Now().Add(-time.Hour))})
		if err != nil {
			return false, err
		}
		c := u.GetCoverageStartTime()
		want := historyStart.Truncate(time.Hour).Add(time.Hour)
		return c.IsValid() && c.AsTime().Equal(want), fmt.Errorf("coverage_start_time %v, want %s", c.AsTime(), want)
	})

	// A campaign started with agentctl (as the tenant's admin) opens the agent's review; its usage
	// window (one day) starts after the coverage.
	out := e.cli(t, "reviews", "start", "--tenant", "default", "--usage-days", "1", "--request-id", "e2e-review-campaign", "-o", "json")
	var started struct{ Campaign string }
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.Campaign == "" {
		t.Fatalf("agentctl reviews start: %q (%v)", out, err)
	}
	campaign := started.Campaign
	waitFor(t, ctx, a.name+"'s review to wait for the owner", func() (bool, error) {
		out, err := runCLI(t, e.agentctl, e.config, "reviews", "list", "--open", "--campaign", campaign, "-o", "json")
		if err != nil {
			return false, err
		}
		var list []struct {
			Agent, Decider string
			Scopes         []struct {
				Scope string
				Used  bool
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err
		}
		for _, rv := range list {
			if rv.Agent != a.name || rv.Decider != "owner" {
				continue
			}
			var used, unused []string
			for _, s := range rv.Scopes {
				if s.Used {
					used = append(used, s.Scope)
				} else {
					unused = append(unused, s.Scope)
				}
			}
			if !slices.Equal(used, []string{"docs.search"}) || !slices.Equal(unused, []string{"docs.read"}) {
				t.Fatalf("the review shows used %v, unused %v; want docs.search used, docs.read unused", used, unused)
			}
			return true, nil
		}
		return false, fmt.Errorf("open reviews: %s", out)
	})

	// The owner certifies with agentctl, logged in with their own credential, keeping nothing.
	ownerConfig := t.TempDir()
	if out, err := runCLI(t, e.agentctl, ownerConfig, "--server", e.p.GRPCAddr, "login", "--credentials", filepath.Join(e.keys, "olivia.json")); err != nil {
		t.Fatalf("agentctl login as the owner: %v\n%s", err, out)
	}
	out, err = runCLI(t, e.agentctl, ownerConfig, "reviews", "decide", a.name, "--certify", "--campaign", campaign, "--comment", "e2e: checked")
	if err != nil || !strings.Contains(out, "certified (decided by you at the owner step); scopes removed: docs.read") {
		t.Fatalf("agentctl reviews decide as the owner: %v\n%s", err, out)
	}
	res, err := e.registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: a.name})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetAgent().GetScopes(); !slices.Equal(got, []string{"docs.search"}) || res.GetAgent().GetState() != registryv1.AgentState_AGENT_STATE_ACTIVE {
		t.Fatalf("agent after the review: %s %v, want ACTIVE with docs.search only", res.GetAgent().GetState(), got)
	}

	// The issuer grants docs.read no more; docs.search still works.
	waitFor(t, ctx, "a token for docs.read to be refused", func() (bool, error) {
		_, err := resourceToken(ctx, a.cred, filesAudience, "docs.read")
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_scope" {
			return true, nil
		}
		return false, fmt.Errorf("token request for docs.read: %v", err)
	})
	// The removal revokes the agent's tokens (an AGENT revocation whose not_before is the event's
	// time plus the issuer's projection-lag allowance): until it has passed, the issuer mints none
	// (invalid_client); then the agent gets a token with the scope it keeps.
	waitFor(t, ctx, "a token for docs.search after the review", func() (bool, error) {
		tok, err := resourceToken(ctx, a.cred, filesAudience, "docs.search")
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "invalid_client":
			return false, fmt.Errorf("token request for docs.search: %v", err)
		case err != nil:
			t.Fatalf("a token for docs.search after the review: %v", err)
		}
		if got := tok.Extra("scope"); got != "docs.search" {
			t.Fatalf("token for docs.search after the review has scope %v", got)
		}
		return true, nil
	})

	// Evidence: agent.scopes_removed on AGENTS, the review's events on LIFECYCLE.
	removed := streamEvents(t, ctx, e, eventstore.StreamAgents, "agentid.default.agent."+a.id+".scopes_removed",
		[]string{"agent.scopes_removed"})
	sr := &registryv1.AgentScopesRemoved{}
	if err := proto.Unmarshal(removed[0].Data, sr); err != nil || !slices.Equal(sr.GetScopes(), []string{"docs.read"}) ||
		!slices.Equal(sr.GetRemainingScopes(), []string{"docs.search"}) || sr.GetTicket() != "review:"+campaign {
		t.Fatalf("agent.scopes_removed = %v (%v)", sr, err)
	}
	evs := streamEvents(t, ctx, e, eventstore.StreamLifecycle, "agentid.default.lifecycle."+a.id+".>",
		[]string{"lifecycle.review_opened", "lifecycle.review_decided", "lifecycle.review_scopes_removed", "lifecycle.review_closed"})
	closed := &lifecyclev1.ReviewClosed{}
	if err := proto.Unmarshal(evs[len(evs)-1].Data, closed); err != nil || closed.GetOutcome() != "certified" || closed.GetDecidedBy() != "olivia" ||
		!slices.Equal(closed.GetRemovedScopes(), []string{"docs.read"}) || closed.GetCampaign() != campaign {
		t.Fatalf("lifecycle.review_closed = %v (%v)", closed, err)
	}
}

// seedTelemetryHistory stores on TELEMETRY one access batch of tenant, dated at, as the monitor's
// RecordAccess stores a resource server's batch (subject telemetry.<tenant>.access.recorded, the
// monitor's NATS identity, the reporter as actor): one request without a token, refused, so that it
// is no agent's activity. The monitor's ingest stores it like any batch; it is the tenant's oldest
// telemetry row.
func seedTelemetryHistory(t *testing.T, ctx context.Context, e *deprovEnv, tenant string, at time.Time) {
	t.Helper()
	nc, err := nats.Connect(e.p.NATSURL, append(natsOptions(t, e.p.NATSURL, natsauth.Monitor), nats.Name("e2e telemetry history"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const reporter = "e2e-docs-server"
	es := eventstore.New(js, eventstore.WithSource("agentid/monitor"), eventstore.WithRegisterer(nil), eventstore.WithClock(func() time.Time { return at }))
	batch := &monitorv1.RecordAccessRequest{
		Parent:  "tenants/" + tenant,
		BatchId: "7b0c2f5e-3d41-4a8e-9c6f-1e2d3a4b5c6d",
		Events: []*monitorv1.AccessEvent{{
			EventId: "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f", Time: timestamppb.New(at), Tenant: tenant, Resource: "/docs/search", Action: "GET",
			Outcome: monitorv1.AccessOutcome_ACCESS_OUTCOME_DENIED, Status: 401, SourceAddress: "192.0.2.10",
		}},
	}
	md := eventstore.Metadata{Tenant: tenant, Actor: eventstore.Actor{ID: reporter, Kind: eventstore.ActorService}}
	if _, err := es.Publish(ctx, "telemetry."+tenant+".access.recorded", "access.recorded",
		"tenants/"+tenant+"/clients/"+reporter, batch, md); err != nil {
		t.Fatal(err)
	}
}

// registerWithScopes registers a low-risk agent of tenant default with owner and scopes (read-only,
// so it is auto-approved) and returns it.
func (e *deprovEnv) registerWithScopes(t *testing.T, ctx context.Context, rid, owner string, scopes ...string) deprovAgent {
	t.Helper()
	id := names.DeriveAgentID("default", rid)
	cred, err := authn.NewCredential("default", id, e.p.issuer("default"))
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := cred.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	in := validAgent(string(jwks))
	in.Owner, in.Scopes = owner, scopes
	res, err := e.registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{Parent: "tenants/default", RequestId: rid, Agent: in})
	if err != nil {
		t.Fatal(err)
	}
	return deprovAgent{name: res.GetAgent().GetName(), id: res.GetAgent().GetAgentId(), cred: cred}
}

// streamEvents waits until stream holds, on subject, events of each of the types want (in this
// order among the review events) and returns them.
func streamEvents(t *testing.T, ctx context.Context, e *deprovEnv, stream, subject string, want []string) []eventstore.Event {
	t.Helper()
	nc, err := nats.Connect(e.p.NATSURL, append(natsOptions(t, e.p.NATSURL, natsauth.Admin), nats.Name("e2e review evidence"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var got []eventstore.Event
	waitFor(t, ctx, strings.Join(want, ", ")+" on "+subject, func() (bool, error) {
		cons, err := pollingConsumer(ctx, js, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
		if err != nil {
			return false, err
		}
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return false, err
		}
		got = got[:0]
		var types []string
		for m := range batch.Messages() {
			ev, err := eventstore.EventFromMsg(m)
			if err != nil {
				return false, err
			}
			if slices.Contains(want, ev.Type) {
				got = append(got, ev)
				types = append(types, ev.Type)
			}
		}
		return slices.Equal(types, want), fmt.Errorf("events %v", types)
	})
	return got
}
