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
// monitor records the token requests with their scopes; a campaign started with agentctl opens the
// agent's review with docs.read unused; the owner certifies with agentctl (their own approval token)
// without keeping docs.read, so it is removed when the review closes (agent.scopes_removed); a token
// request for docs.read is then refused with invalid_scope while docs.search still works; the
// evidence events of the review are on stream LIFECYCLE.
func TestAccessReviewEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := startDeprovEnv(t, ctx)
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

	// A campaign started with agentctl (as the tenant's admin) opens the agent's review.
	out := e.cli(t, "reviews", "start", "--tenant", "default", "--request-id", "e2e-review-campaign", "-o", "json")
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
	if _, err := resourceToken(ctx, a.cred, filesAudience, "docs.search"); err != nil {
		t.Fatalf("a token for docs.search after the review: %v", err)
	}

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
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
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
