package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/agentid/agentid/pkg/eventstore"
	// The payload types, so that every event decodes.
	_ "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/policy/v1"
	_ "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// tailedEvent is the JSON shape of one event printed by `events tail`.
type tailedEvent struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Source        string          `json:"source"`
	Subject       string          `json:"subject"`
	Time          string          `json:"time"`
	Tenant        string          `json:"tenant"`
	Actor         string          `json:"actor,omitempty"`
	ActorKind     string          `json:"actor_kind,omitempty"`
	OnBehalfOf    string          `json:"on_behalf_of,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	Traceparent   string          `json:"traceparent,omitempty"`
	Stream        string          `json:"stream"`
	Sequence      uint64          `json:"sequence"`
	DataSchema    string          `json:"dataschema"`
	Data          json.RawMessage `json:"data"`
}

func newEventsCmd(g *globals) *cobra.Command {
	cmd := group("events", "Watch the platform's events")
	var natsURL string
	var streams []string
	var filter string
	var fromStart bool
	var limit int
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print events as they are appended, decoded to JSON (one object per line)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := nats.Connect(natsURL, nats.Name("agentctl events tail"))
			if err != nil {
				return fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			out := make(chan eventstore.Event, 64)
			grp, ctx := errgroup.WithContext(cmd.Context())
			for _, name := range streams {
				cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
				if fromStart {
					cfg.DeliverPolicy = jetstream.DeliverAllPolicy
				}
				if filter != "" {
					cfg.FilterSubjects = []string{filter}
				}
				cons, err := js.OrderedConsumer(ctx, name, cfg)
				if err != nil {
					return fmt.Errorf("stream %s: %w", name, err)
				}
				grp.Go(func() error {
					it, err := cons.Messages()
					if err != nil {
						return err
					}
					go func() { <-ctx.Done(); it.Stop() }()
					for {
						m, err := it.Next()
						if err != nil {
							return nil
						}
						e, err := eventstore.EventFromMsg(m)
						if err != nil {
							fmt.Fprintf(g.stderr, "skipping a message on %s: %v\n", m.Subject(), err)
							continue
						}
						select {
						case out <- e:
						case <-ctx.Done():
							return nil
						}
					}
				})
			}
			printed := 0
			for printed < limit || limit == 0 {
				select {
				case <-ctx.Done():
					return nil
				case e := <-out:
					if err := g.printEvent(e); err != nil {
						return err
					}
					printed++
				}
			}
			return nil
		},
	}
	tail.Flags().StringVar(&natsURL, "nats-url", envOr("AGENTID_NATS_URL", nats.DefaultURL), "NATS server (env AGENTID_NATS_URL)")
	tail.Flags().StringSliceVar(&streams, "stream", []string{eventstore.StreamTenants, eventstore.StreamAgents,
		eventstore.StreamCredentials, eventstore.StreamPolicy, eventstore.StreamLifecycle, eventstore.StreamTelemetry}, "streams to follow")
	tail.Flags().StringVar(&filter, "subject", "", "only subjects matching this filter (e.g. 'agentid.default.agent.>')")
	tail.Flags().BoolVar(&fromStart, "from-start", false, "replay each stream from its first event")
	tail.Flags().IntVar(&limit, "limit", 0, "stop after this many events (0: follow until interrupted)")
	cmd.AddCommand(tail, newEventsFailedCmd(g))
	return cmd
}

// newEventsFailedCmd is `events failed`: the failed-event log of projections and work consumers.
func newEventsFailedCmd(g *globals) *cobra.Command {
	cmd := group("failed", "List, retry and clear the events that projections and work consumers could not handle")
	var natsURL string
	cmd.PersistentFlags().StringVar(&natsURL, "nats-url", envOr("AGENTID_NATS_URL", nats.DefaultURL), "NATS server (env AGENTID_NATS_URL)")
	withStore := func(cmd *cobra.Command, fn func(*eventstore.Store) error) error {
		nc, err := nats.Connect(natsURL, nats.Name("agentctl "+cmd.CommandPath()))
		if err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		return fn(eventstore.New(js, eventstore.WithRegisterer(nil), eventstore.WithLogger(slog.New(slog.DiscardHandler))))
	}

	var filter eventstore.FailedEventFilter
	list := &cobra.Command{
		Use:   "list",
		Short: "List the failed-event log (-o json for every field)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(s *eventstore.Store) error {
				events, err := s.ListFailedEvents(cmd.Context(), filter)
				if err != nil {
					return err
				}
				return g.printFailedEvents(events)
			})
		},
	}
	list.Flags().StringVar(&filter.Handler, "handler", "", "only this projection or consumer")
	list.Flags().StringVar(&filter.Stream, "stream", "", "only events of this stream")

	// selection is the key argument, or --all with optional filters, of retry and clear.
	type selection struct {
		all    bool
		filter eventstore.FailedEventFilter
	}
	bulk := func(use, short, done string, one func(*eventstore.Store, *cobra.Command, string) error,
		many func(*eventstore.Store, *cobra.Command, eventstore.FailedEventFilter) (int, error)) *cobra.Command {
		var sel selection
		c := &cobra.Command{
			Use:   use + " (KEY | --all [--handler NAME] [--stream NAME])",
			Short: short,
			Args:  cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				switch {
				case sel.all && len(args) == 1:
					return fmt.Errorf("give a KEY or --all, not both")
				case !sel.all && len(args) == 0:
					return fmt.Errorf("give the KEY of an entry (see `agentctl events failed list`) or --all")
				case !sel.all && (sel.filter.Handler != "" || sel.filter.Stream != ""):
					return fmt.Errorf("--handler and --stream select entries for --all; with a KEY, leave them out")
				}
				return withStore(cmd, func(s *eventstore.Store) error {
					if !sel.all {
						if err := one(s, cmd, args[0]); err != nil {
							return err
						}
						_, err := fmt.Fprintf(g.stdout, "%s %s\n", args[0], done)
						return err
					}
					n, err := many(s, cmd, sel.filter)
					if err != nil {
						return fmt.Errorf("%d entries %s before: %w", n, done, err)
					}
					_, err = fmt.Fprintf(g.stdout, "%d entries %s\n", n, done)
					return err
				})
			},
		}
		c.Flags().BoolVar(&sel.all, "all", false, "every entry (narrowed by --handler and --stream)")
		c.Flags().StringVar(&sel.filter.Handler, "handler", "", "with --all: only this projection or consumer")
		c.Flags().StringVar(&sel.filter.Stream, "stream", "", "with --all: only events of this stream")
		return c
	}
	retry := bulk("retry", "Ask the running consumer or projection to handle failed events again; an entry disappears once handled",
		"retry requested",
		func(s *eventstore.Store, cmd *cobra.Command, key string) error {
			return s.RetryFailedEvent(cmd.Context(), key)
		},
		func(s *eventstore.Store, cmd *cobra.Command, f eventstore.FailedEventFilter) (int, error) {
			return s.RetryFailedEvents(cmd.Context(), f)
		})
	clearCmd := bulk("clear", "Remove entries from the failed-event log without handling their events", "cleared",
		func(s *eventstore.Store, cmd *cobra.Command, key string) error {
			return s.ClearFailedEventKey(cmd.Context(), key)
		},
		func(s *eventstore.Store, cmd *cobra.Command, f eventstore.FailedEventFilter) (int, error) {
			return s.ClearFailedEvents(cmd.Context(), f)
		})
	cmd.AddCommand(list, retry, clearCmd)
	return cmd
}

// printFailedEvents writes failed-event log entries as a table, or as JSON or YAML.
func (g *globals) printFailedEvents(events []eventstore.FailedEvent) error {
	if g.output == "json" || g.output == "yaml" {
		if events == nil {
			events = []eventstore.FailedEvent{}
		}
		return g.printDoc(events)
	}
	t := table{header: []string{"KEY", "KIND", "EVENT TYPE", "DELIVERIES", "RETRIES", "STATUS", "FAILED AT", "ERROR"}}
	for _, fe := range events {
		status := "failed"
		switch {
		case !fe.RetryingSince.IsZero():
			status = "retrying"
		case !fe.RetryRequestedAt.IsZero():
			status = "retry requested"
		}
		t.rows = append(t.rows, []string{fe.Key, fe.Kind, fe.EventType, fmt.Sprint(fe.Deliveries), fmt.Sprint(fe.Retries), status,
			fe.Time.UTC().Format(time.RFC3339), oneLine(fe.Error, 80)})
	}
	return writeTable(g.stdout, t)
}

// oneLine shortens s to one line of at most n characters for a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// printEvent writes one decoded event: compact JSON per line, or a YAML document.
func (g *globals) printEvent(e eventstore.Event) error {
	te := tailedEvent{ID: e.ID, Type: e.Type, Source: e.Source, Subject: e.Subject, Time: e.Time.UTC().Format(time.RFC3339Nano),
		Tenant: e.Metadata.Tenant, Actor: e.Metadata.Actor.ID, ActorKind: string(e.Metadata.Actor.Kind),
		OnBehalfOf: e.Metadata.OnBehalfOf, CorrelationID: e.Metadata.CorrelationID, CausationID: e.Metadata.CausationID,
		Traceparent: e.Metadata.Traceparent, Stream: e.Stream, Sequence: e.Sequence, DataSchema: e.DataSchema}
	if msg, err := e.Decode(); err == nil {
		if te.Data, err = protojson.Marshal(msg); err != nil {
			return err
		}
	} else {
		te.Data, _ = json.Marshal(map[string]string{"undecodable": err.Error()})
	}
	b, err := json.Marshal(te)
	if err != nil {
		return err
	}
	if g.output == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.stdout, "---\n%s", b)
		return err
	}
	_, err = fmt.Fprintln(g.stdout, string(b))
	return err
}
