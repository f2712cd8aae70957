package cli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Limits of `agentctl directory sync`.
const (
	// maxSyncBatch is how many principals one SyncDirectory request carries (the server's limit).
	maxSyncBatch = 10_000
	// maxDirectoryFile bounds the file read (about 1,000,000 principals).
	maxDirectoryFile = 256 << 20
)

func newDirectoryCmd(g *globals) *cobra.Command {
	cmd := group("directory", "The tenant's directory of people and teams (owners and sponsors of agents)")
	cmd.AddCommand(newDirectorySyncCmd(g), newDirectoryListCmd(g))
	return cmd
}

func newDirectorySyncCmd(g *globals) *cobra.Command {
	var file, requestID string
	var replace, allowMassDeparture bool
	cmd := &cobra.Command{
		Use:   "sync -f FILE",
		Short: "Record the tenant's people and teams from a CSV or JSON file (an HR or SCIM export)",
		Long: `Record the tenant's people and teams. Once a tenant has a directory, owners and sponsors of its
agents must be ACTIVE principals of it. A principal that becomes DEPARTED (or, with --replace, is no
longer listed) orphans every agent it owns or sponsors: the registry marks each agent.orphaned and
the lifecycle service reviews or deprovisions it, as its orphan sweep is configured.

The file is CSV with a header row naming the columns id (required), kind (person or team; default:
team for ids starting with team:, person otherwise), display_name and status (active, the default,
or departed); or JSON: an array of {"id", "kind", "display_name", "status"} objects, or an object
{"principals": [...]}. A merge of more than 10,000 principals is sent in several requests; --replace
sends the whole directory in one request (at most 10,000 principals). A --replace that would
depart more than 10% of the ACTIVE principals, or more than 50 of them, is refused (an empty or
truncated export would orphan every agent) unless --allow-mass-departure is given.
Callers: platform-admin, tenant-admin.`,
		Example: `  agentctl directory sync -f people.csv
  agentctl directory sync -f people.json --replace`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f is required: the CSV or JSON file of people and teams")
			}
			ps, err := readPrincipals(file)
			if err != nil {
				return err
			}
			if allowMassDeparture && !replace {
				return errors.New("--allow-mass-departure: only meaningful with --replace")
			}
			if len(ps) == 0 && !replace {
				return fmt.Errorf("%s: no principals (an empty directory is only meaningful with --replace)", file)
			}
			if replace && len(ps) > maxSyncBatch {
				return fmt.Errorf("%s: %d principals: --replace sends the whole directory in one request, at most %d", file, len(ps), maxSyncBatch)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			client := registryv1.NewRegistryServiceClient(conn)
			requestID = requestIDOr(requestID, "directory-sync")
			total := &registryv1.SyncDirectoryResponse{}
			for i, start := 0, 0; start < len(ps) || (i == 0 && replace); i, start = i+1, start+maxSyncBatch {
				batch := ps[start:min(start+maxSyncBatch, len(ps))]
				id := requestID
				if len(ps) > maxSyncBatch {
					id = requestID + "-" + strconv.Itoa(i+1)
				}
				res, err := client.SyncDirectory(cmd.Context(), &registryv1.SyncDirectoryRequest{
					Parent: "tenants/" + g.tenantOr(s), Principals: batch, Replace: replace, AllowMassDeparture: allowMassDeparture, RequestId: id,
				})
				if err != nil {
					return mutationError("the directory sync", id, "", err)
				}
				total.Added += res.GetAdded()
				total.Updated += res.GetUpdated()
				total.Departed = append(total.Departed, res.GetDeparted()...)
				total.AgentsOrphaned += res.GetAgentsOrphaned()
			}
			return g.printResult([]proto.Message{total}, false, func() table {
				t := table{header: []string{"ADDED", "UPDATED", "DEPARTED", "AGENTS ORPHANED"}}
				t.rows = append(t.rows, []string{strconv.Itoa(int(total.GetAdded())), strconv.Itoa(int(total.GetUpdated())),
					strings.Join(total.GetDeparted(), ","), strconv.Itoa(int(total.GetAgentsOrphaned()))})
				return t
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "CSV (.csv) or JSON (.json) file of principals (required)")
	f.BoolVar(&replace, "replace", false, "the file is the whole directory: active principals it does not list depart")
	f.BoolVar(&allowMassDeparture, "allow-mass-departure", false, "with --replace: depart more than 10% of the active principals or more than 50 of them")
	f.StringVar(&requestID, "request-id", "", "idempotency key (a retry with the same key records nothing new)")
	return cmd
}

func newDirectoryListCmd(g *globals) *cobra.Command {
	var status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's directory, ordered by id",
		Long: `List the tenant's people and teams, ordered by id, with their status.
Callers: any role of the tenant.`,
		Example: `  agentctl directory list
  agentctl directory list --status departed -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := principalStatus(status)
			if err != nil {
				return fmt.Errorf("--status: %w", err)
			}
			conn, s, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer conn.Close()
			var all []*registryv1.Principal
			token := ""
			for {
				res, err := registryv1.NewRegistryServiceClient(conn).ListPrincipals(cmd.Context(), &registryv1.ListPrincipalsRequest{
					Parent: "tenants/" + g.tenantOr(s), Status: st, PageSize: 1000, PageToken: token,
				})
				if err != nil {
					return err
				}
				all = append(all, res.GetPrincipals()...)
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			msgs := make([]proto.Message, len(all))
			for i, p := range all {
				msgs[i] = p
			}
			return g.printResult(msgs, true, func() table {
				t := table{header: []string{"ID", "KIND", "STATUS", "DISPLAY NAME", "UPDATED"}}
				for _, p := range all {
					t.rows = append(t.rows, []string{p.GetId(), enumName(p.GetKind().String(), "PRINCIPAL_KIND_"),
						enumName(p.GetStatus().String(), "PRINCIPAL_STATUS_"), p.GetDisplayName(), p.GetUpdateTime().AsTime().Format("2006-01-02T15:04:05Z")})
				}
				return t
			})
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only principals of this status: active or departed")
	return cmd
}

// principalKind parses a kind column: person, team or empty.
func principalKind(v string) (registryv1.PrincipalKind, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return registryv1.PrincipalKind_PRINCIPAL_KIND_UNSPECIFIED, nil
	case "person":
		return registryv1.PrincipalKind_PRINCIPAL_KIND_PERSON, nil
	case "team":
		return registryv1.PrincipalKind_PRINCIPAL_KIND_TEAM, nil
	}
	return 0, fmt.Errorf("kind %q is neither person nor team", v)
}

// principalStatus parses a status column: active, departed or empty.
func principalStatus(v string) (registryv1.PrincipalStatus, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return registryv1.PrincipalStatus_PRINCIPAL_STATUS_UNSPECIFIED, nil
	case "active":
		return registryv1.PrincipalStatus_PRINCIPAL_STATUS_ACTIVE, nil
	case "departed":
		return registryv1.PrincipalStatus_PRINCIPAL_STATUS_DEPARTED, nil
	}
	return 0, fmt.Errorf("status %q is neither active nor departed", v)
}

// principalRow is one principal as a file gives it.
type principalRow struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	DisplayName string `json:"display_name"`
	Status      string `json:"status"`
}

func (r principalRow) principal() (*registryv1.Principal, error) {
	if strings.TrimSpace(r.ID) == "" {
		return nil, errors.New("id is required")
	}
	kind, err := principalKind(r.Kind)
	if err != nil {
		return nil, err
	}
	st, err := principalStatus(r.Status)
	if err != nil {
		return nil, err
	}
	return &registryv1.Principal{Id: strings.TrimSpace(r.ID), Kind: kind, DisplayName: strings.TrimSpace(r.DisplayName), Status: st}, nil
}

// readPrincipals reads a CSV or JSON directory file (by its extension); every error names the file
// and the row.
func readPrincipals(path string) ([]*registryv1.Principal, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDirectoryFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxDirectoryFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, maxDirectoryFile>>20)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv":
		return parsePrincipalsCSV(path, data)
	case ".json":
		return parsePrincipalsJSON(path, data)
	default:
		return nil, fmt.Errorf("%s: want a .csv or .json file, not %q", path, ext)
	}
}

// parsePrincipalsCSV reads CSV with a header row (id, kind, display_name, status; id required).
func parsePrincipalsCSV(path string, data []byte) ([]*registryv1.Principal, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))))
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: no header row (id,kind,display_name,status): %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		switch name {
		case "id", "kind", "display_name", "status":
		default:
			return nil, fmt.Errorf("%s: unknown column %q (want id, kind, display_name, status)", path, h)
		}
		if _, dup := col[name]; dup {
			return nil, fmt.Errorf("%s: column %q appears twice", path, name)
		}
		col[name] = i
	}
	if _, ok := col["id"]; !ok {
		return nil, fmt.Errorf("%s: the header has no id column", path)
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var out []*registryv1.Principal
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		p, err := principalRow{ID: field(rec, "id"), Kind: field(rec, "kind"), DisplayName: field(rec, "display_name"), Status: field(rec, "status")}.principal()
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, line, err)
		}
		out = append(out, p)
	}
}

// parsePrincipalsJSON reads a JSON array of principals, or {"principals": [...]}; unknown fields
// are errors.
func parsePrincipalsJSON(path string, data []byte) ([]*registryv1.Principal, error) {
	var rows []principalRow
	trimmed := bytes.TrimSpace(data)
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if bytes.HasPrefix(trimmed, []byte("{")) {
		var doc struct {
			Principals []principalRow `json:"principals"`
		}
		if err := dec.Decode(&doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		rows = doc.Principals
	} else if err := dec.Decode(&rows); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]*registryv1.Principal, 0, len(rows))
	for i, r := range rows {
		p, err := r.principal()
		if err != nil {
			return nil, fmt.Errorf("%s: principal %d: %w", path, i+1, err)
		}
		out = append(out, p)
	}
	return out, nil
}
