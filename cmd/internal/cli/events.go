package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/fsutil"
	"github.com/agentid/agentid/pkg/natsauth"
	eventsv1 "github.com/agentid/agentid/proto/gen/go/agentid/events/v1"
)

func newEventsCmd(g *globals) *cobra.Command {
	cmd := group("events", "Watch the platform's events")
	var types []string
	var aggType, aggID, since, cursor, cursorFile string
	var fromStart bool
	var limit int
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print the tenant's events as they are appended, as CloudEvents JSON (one object per line)",
		Long: "Subscribes to the tenant's events through the API (EventsService.Subscribe; roles subscriber, auditor,\n" +
			"tenant-admin or platform-admin) and prints each as a CloudEvents 1.0 JSON object on one line.\n" +
			"With --cursor-file the position is saved after every event and heartbeat, and a later run resumes\n" +
			"exactly after it (a saved cursor wins over --since and --from-start, which start the first run).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &eventsv1.SubscribeRequest{EventTypes: types, AggregateType: aggType, AggregateId: aggID}
			explicit := 0
			for _, set := range []bool{cursor != "", since != "", fromStart} {
				if set {
					explicit++
				}
			}
			if explicit > 1 {
				return fmt.Errorf("give at most one of --cursor, --since and --from-start")
			}
			if cursorFile != "" && cursor == "" {
				// A saved cursor wins over --since and --from-start, which only start the first run.
				b, err := os.ReadFile(cursorFile)
				switch {
				case err == nil:
					cursor = strings.TrimSpace(string(b))
				case !errors.Is(err, fs.ErrNotExist):
					return fmt.Errorf("--cursor-file: %w", err)
				}
			}
			switch {
			case cursor != "":
				req.Start = &eventsv1.SubscribeRequest_Cursor{Cursor: cursor}
			case since != "":
				t, err := parseSince(since, time.Now())
				if err != nil {
					return fmt.Errorf("--since %q: %w", since, err)
				}
				req.Start = &eventsv1.SubscribeRequest_StartTime{StartTime: timestamppb.New(t)}
			case fromStart:
				req.Start = &eventsv1.SubscribeRequest_Position{Position: eventsv1.StartPosition_START_POSITION_EARLIEST}
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			req.Parent = "tenants/" + g.tenantOr(s)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			stream, err := eventsv1.NewEventsServiceClient(conn).Subscribe(ctx, req)
			if err != nil {
				return err
			}
			for printed := 0; limit == 0 || printed < limit; {
				r, err := stream.Recv()
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil // interrupted
					}
					return err
				}
				if ce := r.GetCloudEventJson(); ce != nil {
					if err := g.printCloudEvent(ce); err != nil {
						return err
					}
					printed++
				}
				if cursorFile != "" && r.GetCursor() != "" {
					if err := fsutil.WriteFileAtomic(cursorFile, []byte(r.GetCursor()+"\n"), 0o600); err != nil {
						return fmt.Errorf("--cursor-file: %w", err)
					}
				}
			}
			return nil
		},
	}
	tail.Flags().StringSliceVar(&types, "type", nil, "only these event types; a type ending in a dot is a prefix (e.g. 'agent.')")
	tail.Flags().StringVar(&aggType, "aggregate-type", "", "only events of this aggregate type (tenant, agent, client, signingkey, policy, lifecycle, revocation)")
	tail.Flags().StringVar(&aggID, "aggregate-id", "", "only events of the aggregate with this id")
	tail.Flags().BoolVar(&fromStart, "from-start", false, "replay every stored event of the tenant first")
	tail.Flags().StringVar(&since, "since", "", "replay the events recorded since this time (RFC 3339) or this long ago (e.g. 1h)")
	tail.Flags().StringVar(&cursor, "cursor", "", "resume exactly after the position this cursor names")
	tail.Flags().StringVar(&cursorFile, "cursor-file", "", "resume from the cursor in this file if it exists, and save the cursor there after every event")
	tail.Flags().IntVar(&limit, "limit", 0, "stop after this many events (0: follow until interrupted)")
	cmd.AddCommand(tail, newEventsFailedCmd(g))
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("want an RFC 3339 time or a positive duration such as 30m")
	}
	return now.Add(-d), nil
}

// newEventsFailedCmd is `events failed`: the failed-event log of projections and work consumers.
func newEventsFailedCmd(g *globals) *cobra.Command {
	cmd := group("failed", "List, retry and clear the events that projections and work consumers could not handle")
	var natsURL, natsNkey, natsCA string
	cmd.PersistentFlags().StringVar(&natsURL, "nats-url", envOr("AGENTID_NATS_URL", nats.DefaultURL), "NATS server (env AGENTID_NATS_URL)")
	cmd.PersistentFlags().StringVar(&natsNkey, "nats-nkey", envOr("AGENTID_NATS_NKEY", ""), "nkey seed file of the NATS admin identity (agentid dev: <data-dir>/credentials/nats/admin.nk; env AGENTID_NATS_NKEY)")
	cmd.PersistentFlags().StringVar(&natsCA, "nats-ca", envOr("AGENTID_NATS_CA", ""), "CA bundle (PEM) that the NATS server's TLS certificate is verified against (env AGENTID_NATS_CA)")
	withStore := func(cmd *cobra.Command, fn func(*eventstore.Store) error) error {
		opts, err := natsauth.ClientOptions(natsNkey, natsCA)
		if err != nil {
			return err
		}
		nc, err := nats.Connect(natsURL, append(opts, nats.Name("agentctl "+cmd.CommandPath()))...)
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

// printCloudEvent writes one CloudEvents JSON object: compact on one line, or as a YAML document.
func (g *globals) printCloudEvent(ce []byte) error {
	if g.output == "yaml" {
		b, err := yaml.JSONToYAML(ce)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.stdout, "---\n%s", b)
		return err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, ce); err != nil {
		return fmt.Errorf("the server sent an event that is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := g.stdout.Write(buf.Bytes())
	return err
}
