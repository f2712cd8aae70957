package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/agentid/agentid/pkg/discovery"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// discoverFlags are the flags of the discover commands.
type discoverFlags struct {
	output      string // table, json or sarif (its own -o: SARIF is discover's alone)
	offline     bool
	ghostsOnly  bool
	failOnGhost bool
}

func newDiscoverCmd(g *globals) *cobra.Command {
	df := &discoverFlags{}
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "Find ghost agents: agent definitions, OAuth clients and credentials nobody registered",
		Long: "Find ghost agents. `code` scans a source tree on this machine (the code never leaves it: only client ids,\n" +
			"agent ids, public key thumbprints and SHA-256 fingerprints are sent to the registry to learn which a registered\n" +
			"agent owns); `logs` reads API-gateway access logs; `platform` lists issuer clients without a registry entry and\n" +
			"inactive or ownerless agents; `adopt` registers a finding as a PROPOSED agent. Secrets are never printed in full.",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			switch df.output {
			case "table", "json", "sarif":
				return nil
			}
			return fmt.Errorf("-o %q: want table, json or sarif", df.output)
		},
	}
	cmd.PersistentFlags().StringVarP(&df.output, "output", "o", "table", "output format: table, json or sarif (sarif: code findings only)")
	cmd.PersistentFlags().BoolVar(&df.ghostsOnly, "ghosts-only", false, "show only findings no registered agent owns")
	cmd.PersistentFlags().BoolVar(&df.failOnGhost, "fail-on-ghost", false, "fail (exit status 1) when a ghost is found, after printing the findings (for CI)")
	cmd.AddCommand(newDiscoverCodeCmd(g, df), newDiscoverLogsCmd(g, df), newDiscoverPlatformCmd(g, df), newDiscoverAdoptCmd(g, df))
	return cmd
}

// errGhostsFound is returned under --fail-on-ghost once the findings are printed.
var errGhostsFound = errors.New("ghost findings present (--fail-on-ghost)")

func newDiscoverCodeCmd(g *globals, df *discoverFlags) *cobra.Command {
	var opts discovery.CodeOptions
	cmd := &cobra.Command{
		Use:   "code DIR",
		Short: "Scan a source tree and deployment manifests for agent definitions, OAuth clients and static credentials",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			fs, stats, err := discovery.ScanCode(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			if !df.offline {
				if err := g.resolveFindings(cmd.Context(), fs); err != nil {
					return fmt.Errorf("resolve findings (use --offline to scan without the registry): %w", err)
				}
			}
			elapsed := time.Since(start)
			fmt.Fprintf(g.stderr, "scanned %d files (%.1f MB) in %s; skipped %d large, %d binary, %d directories\n",
				stats.Files, float64(stats.Bytes)/1e6, elapsed.Round(time.Millisecond), stats.SkippedLarge, stats.SkippedBinary, stats.SkippedDirs)
			return df.print(g, fs, stats)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&opts.MaxFileSize, "max-file-size", discovery.DefaultMaxFileSize, "skip files larger than this many bytes")
	f.IntVar(&opts.Workers, "workers", 0, "files scanned in parallel (default: the number of CPUs)")
	f.BoolVar(&opts.IncludeVendor, "include-vendor", false, "also scan vendor/, node_modules/, third_party/ and virtualenvs")
	f.BoolVar(&df.offline, "offline", false, "do not ask the registry which findings a registered agent owns (every finding is reported as a ghost)")
	return cmd
}

func newDiscoverLogsCmd(g *globals, df *discoverFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "logs FILE",
		Short: "Read API-gateway access logs (nginx or Envoy JSON) for client ids and API keys no registered agent owns",
		Long: "Read API-gateway access logs (FILE, or - for standard input). nginx lines use the `agentid` log_format\n" +
			"(combined plus the client id and API key fields, docs/discovery.md); Envoy lines are JSON access logs.\n" +
			"Lines are parsed here; only client ids and API key fingerprints are sent to the registry. Malformed\n" +
			"lines are counted, not fatal.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if df.output == "sarif" {
				return errors.New("-o sarif is for code findings: use table or json for logs")
			}
			var lf registryv1.LogFormat
			switch format {
			case "nginx":
				lf = registryv1.LogFormat_LOG_FORMAT_NGINX
			case "envoy":
				lf = registryv1.LogFormat_LOG_FORMAT_ENVOY
			default:
				return fmt.Errorf("--format %q: want nginx or envoy", format)
			}
			var r io.Reader = os.Stdin
			name := "stdin"
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r, name = f, args[0]
			}
			agg, err := discovery.NewLogAggregator(lf, name)
			if err != nil {
				return err
			}
			if _, err := agg.ReadFrom(r); err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			fs := agg.Findings()
			if !df.offline {
				if err := g.resolveFindings(cmd.Context(), fs); err != nil {
					return fmt.Errorf("resolve findings (use --offline to read the log without the registry): %w", err)
				}
			}
			fmt.Fprintf(g.stderr, "%d lines: %d parsed, %d malformed; %d identities\n", agg.Lines, agg.Parsed, agg.Malformed, len(fs))
			return df.print(g, fs, map[string]int64{"lines": agg.Lines, "parsed": agg.Parsed, "malformed": agg.Malformed, "overflow": agg.Overflow})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "log format: nginx or envoy (required)")
	cmd.Flags().BoolVar(&df.offline, "offline", false, "do not ask the registry which identities a registered agent owns")
	return cmd
}

func newDiscoverPlatformCmd(g *globals, df *discoverFlags) *cobra.Command {
	var days int32
	cmd := &cobra.Command{
		Use:   "platform",
		Short: "List issuer clients without a registry entry, and agents inactive for N days or without an owner",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if df.output == "sarif" {
				return errors.New("-o sarif is for code findings: use table or json for platform findings")
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			c := registryv1.NewDiscoveryServiceClient(conn)
			var fs []*registryv1.Finding
			token := ""
			for {
				res, err := c.ListPlatformFindings(cmd.Context(), &registryv1.ListPlatformFindingsRequest{
					Parent: "tenants/" + g.tenantOr(s), InactiveDays: days, PageSize: 1000, PageToken: token,
				})
				if err != nil {
					return err
				}
				fs = append(fs, res.GetFindings()...)
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			return df.print(g, fs, nil)
		},
	}
	cmd.Flags().Int32Var(&days, "inactive-days", 90, "report agents with no activity for this many days")
	return cmd
}

func newDiscoverAdoptCmd(g *globals, df *discoverFlags) *cobra.Command {
	var from, owner, sponsor, jwksFile, displayName, environment, purpose string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "adopt FINDING_ID",
		Short: "Register a ghost finding as a PROPOSED agent (idempotent: adopting again returns the same agent)",
		Long: "Register a ghost finding as a PROPOSED agent with the given owner and sponsor. A platform finding is found\n" +
			"by its id; a code or log finding is read from --from FILE, the JSON output (-o json) of the scan that found it.\n" +
			"The agent needs its public keys (--jwks-file) and its scopes (--scope). Unset fields get conservative defaults (autonomous, internal,\n" +
			"confidential, the environment the finding suggests, else prod); change them before SubmitAgent.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if owner == "" {
				return errors.New("--owner is required")
			}
			if sponsor == "" {
				return errors.New("--sponsor is required")
			}
			tmpl := &registryv1.Agent{DisplayName: displayName, Purpose: purpose, Scopes: scopes}
			if environment != "" {
				env, err := enumOf[registryv1.Environment]("--environment", environment, "ENVIRONMENT_", registryv1.Environment_value)
				if err != nil {
					return err
				}
				tmpl.Environment = env
			}
			if jwksFile != "" {
				b, err := os.ReadFile(jwksFile)
				if err != nil {
					return fmt.Errorf("--jwks-file: %w", err)
				}
				tmpl.PublicJwks = string(b)
			}
			var finding *registryv1.Finding
			if from != "" {
				f, err := findingFromFile(from, args[0])
				if err != nil {
					return err
				}
				finding = f
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			res, err := registryv1.NewDiscoveryServiceClient(conn).AdoptFinding(cmd.Context(), &registryv1.AdoptFindingRequest{
				Parent: "tenants/" + g.tenantOr(s), FindingId: args[0], Finding: finding, Owner: owner, Sponsor: sponsor, Agent: tmpl,
			})
			if err != nil {
				return err
			}
			if df.output == "json" {
				b, err := protojson.Marshal(res)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(g.stdout, string(b))
				return err
			}
			a := res.GetAgent()
			_, err = fmt.Fprintf(g.stdout, "adopted %s as %s (%s), owner %s, sponsor %s\n", args[0], a.GetName(),
				enumName(a.GetState().String(), "AGENT_STATE_"), a.GetOwner(), a.GetSponsor())
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "JSON output of the scan that found a code or log finding")
	f.StringVar(&owner, "owner", "", "accountable owner of the agent (required)")
	f.StringVar(&sponsor, "sponsor", "", "sponsor of the agent (required)")
	f.StringVar(&jwksFile, "jwks-file", "", "the agent's public JWK Set")
	f.StringVar(&displayName, "display-name", "", "display name (default: the name the finding suggests)")
	f.StringVar(&purpose, "purpose", "", "purpose (default: where the finding was made)")
	f.StringSliceVar(&scopes, "scope", nil, "a scope the agent needs (repeat; at least one)")
	f.StringVar(&environment, "environment", "", "dev, test, staging or prod (default: the finding's hint, else prod)")
	return cmd
}

// findingFromFile reads finding id from the JSON output of a discover command.
func findingFromFile(path, id string) (*registryv1.Finding, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	var doc struct {
		Findings []json.RawMessage `json:"findings"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("--from %s: not the JSON output of agentctl discover: %w", path, err)
	}
	for _, raw := range doc.Findings {
		f := &registryv1.Finding{}
		if err := protojson.Unmarshal(raw, f); err != nil {
			return nil, fmt.Errorf("--from %s: %w", path, err)
		}
		if f.GetId() == id {
			return f, nil
		}
	}
	return nil, fmt.Errorf("--from %s: no finding %s", path, id)
}

// resolveFindings asks the registry which registered agent owns each finding's identifier (client
// ids, agent ids, key thumbprints, secret fingerprints: never a secret) and marks the findings.
func (g *globals) resolveFindings(ctx context.Context, fs []*registryv1.Finding) error {
	ids := discovery.Identifiers(fs)
	if len(ids) == 0 {
		return nil
	}
	conn, s, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := registryv1.NewDiscoveryServiceClient(conn)
	var all []*registryv1.Resolution
	for len(ids) > 0 {
		n := min(len(ids), discovery.MaxIdentifiers)
		res, err := c.ResolveIdentifiers(ctx, &registryv1.ResolveIdentifiersRequest{Parent: "tenants/" + g.tenantOr(s), Identifiers: ids[:n]})
		if err != nil {
			return err
		}
		all = append(all, res.GetResolutions()...)
		ids = ids[n:]
	}
	discovery.ApplyResolutions(fs, all)
	return nil
}

// print writes findings in the chosen format; under --fail-on-ghost it fails when one is a ghost.
func (df *discoverFlags) print(g *globals, fs []*registryv1.Finding, stats any) error {
	if df.ghostsOnly {
		kept := fs[:0:0]
		for _, f := range fs {
			if f.GetGhost() {
				kept = append(kept, f)
			}
		}
		fs = kept
	}
	var err error
	switch df.output {
	case "json":
		err = discovery.WriteJSON(g.stdout, fs, stats)
	case "sarif":
		err = discovery.WriteSARIF(g.stdout, fs, "agentctl")
	default:
		err = discovery.WriteTable(g.stdout, fs)
	}
	if err != nil {
		return err
	}
	if df.failOnGhost {
		for _, f := range fs {
			if f.GetGhost() {
				return errGhostsFound
			}
		}
	}
	return nil
}
