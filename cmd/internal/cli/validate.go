package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentid/agentid/cmd/internal/manifest"
)

// manifestFlags are the flags of validate, plan and apply that choose the manifests.
type manifestFlags struct {
	files []string
	set   string
}

func (f *manifestFlags) register(cmd *cobra.Command, withSet bool) {
	cmd.Flags().StringArrayVarP(&f.files, "filename", "f", nil, "manifest file or directory (searched recursively for *.yaml and *.yml); repeatable")
	if withSet {
		cmd.Flags().StringVar(&f.set, "set", "", "name of the manifest set, recorded in the label agentid.dev/source; --prune retires only agents of this set (default: the name of the first -f directory)")
	}
}

// load reads and checks every manifest offline; a problem anywhere is an error listing every
// problem, one a line.
func (f *manifestFlags) load(defaultTenant string) (*manifest.Set, error) {
	if len(f.files) == 0 {
		return nil, errors.New("give the manifests with -f FILE or -f DIR")
	}
	set, err := manifest.Load(f.files, manifest.Options{DefaultTenant: defaultTenant})
	var probs manifest.Problems
	if errors.As(err, &probs) {
		return nil, &manifestError{probs: probs, docs: countDocs(set)}
	}
	return set, err
}

// setName is --set, else the base name of the first -f path (without extension for a file).
func (f *manifestFlags) setName() (string, error) {
	name := f.set
	if name == "" {
		abs, err := filepath.Abs(f.files[0])
		if err != nil {
			return "", err
		}
		name = strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))
		if err := manifest.ValidSetName(name); err != nil {
			return "", fmt.Errorf("%w: name the set with --set NAME", err)
		}
	}
	if err := manifest.ValidSetName(name); err != nil {
		return "", fmt.Errorf("--set: %w", err)
	}
	return name, nil
}

func countDocs(set *manifest.Set) int {
	if set == nil {
		return 0
	}
	return len(set.Manifests)
}

// manifestError is a manifest set with problems: every problem, one a line.
type manifestError struct {
	probs manifest.Problems
	docs  int
}

func (e *manifestError) Error() string {
	return fmt.Sprintf("%d problem(s) in the manifests (%d document(s) read); nothing was sent:\n%s", len(e.probs), e.docs, e.probs.Error())
}

func newValidateCmd(g *globals) *cobra.Command {
	var mf manifestFlags
	cmd := &cobra.Command{
		Use:   "validate -f DIR",
		Short: "Check agent manifests offline: every problem of every document, as file:line: path: rule",
		Long: `validate reads kind: Agent manifests (YAML, several documents a file, directories searched
recursively) and checks them against the manifest schema (schemas/agent.v1.json) and the rules the
registry applies that need no server: unknown fields, enum values, scopes, labels, public keys, expiry
and duplicate names. It reports every problem at once and exits 1 if there is any. It needs no login.`,
		Example: `  agentctl validate -f examples/agents-as-code/acme`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := mf.load(g.tenant)
			if err != nil {
				return err
			}
			type row struct {
				Name   string `json:"name"`
				Tenant string `json:"tenant,omitempty"`
				File   string `json:"file"`
				Line   int    `json:"line"`
			}
			rows := make([]row, 0, len(set.Manifests))
			for _, m := range set.Manifests {
				rows = append(rows, row{Name: m.Metadata.Name, Tenant: m.Metadata.Tenant, File: m.File, Line: m.Line})
			}
			if g.output != "table" {
				return g.printDoc(map[string]any{"valid": true, "files": len(set.Files), "manifests": rows})
			}
			t := table{header: []string{"NAME", "TENANT", "ENVIRONMENT", "FILE"}}
			for i, m := range set.Manifests {
				tenant := m.Metadata.Tenant
				if tenant == "" {
					tenant = "(default)"
				}
				t.rows = append(t.rows, []string{m.Metadata.Name, tenant, m.Spec.Environment, fmt.Sprintf("%s:%d", rows[i].File, rows[i].Line)})
			}
			if err := writeTable(g.stdout, t); err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.stdout, "%d manifest(s) in %d file(s) are valid\n", len(set.Manifests), len(set.Files))
			return err
		},
	}
	mf.register(cmd, false)
	return cmd
}
