package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// table is a simple column layout for -o table.
type table struct {
	header []string
	rows   [][]string
}

// printResult writes msgs as JSON or YAML (protojson field names), or as the table tbl builds.
func (g *globals) printResult(msgs []proto.Message, list bool, tbl func() table) error {
	switch g.output {
	case "json", "yaml":
		var raw []json.RawMessage
		for _, m := range msgs {
			b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
			if err != nil {
				return err
			}
			raw = append(raw, b)
		}
		var doc any = raw
		if !list && len(raw) == 1 {
			doc = raw[0]
		}
		return g.printDoc(doc)
	default:
		return writeTable(g.stdout, tbl())
	}
}

func writeTable(w io.Writer, t table) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// enumName shortens FOO_BAR_VALUE enum names for tables: ("AGENT_STATE_ACTIVE", "AGENT_STATE_") → "active".
func enumName(full, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(full, prefix))
}

// printDoc writes doc as indented JSON, or as YAML with -o yaml.
func (g *globals) printDoc(doc any) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if g.output == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = g.stdout.Write(b)
		return err
	}
	_, err = fmt.Fprintln(g.stdout, string(b))
	return err
}
