package assetgraph

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// dotShapes are the Graphviz shapes of node kinds.
var dotShapes = map[NodeKind]string{
	KindAgent: "box", KindTenant: "folder", KindOwner: "ellipse", KindSponsor: "ellipse", KindClient: "component",
	KindKey: "note", KindScope: "hexagon", KindRole: "hexagon", KindResource: "parallelogram",
	KindDependency: "cylinder", KindResourceSeen: "parallelogram",
}

// DOT renders the graph for Graphviz (`dot -Tsvg`). Node IDs are n0, n1, … in the graph's order;
// labels are "<kind>: <label>", escaped for double-quoted DOT strings.
func (g *Graph) DOT() string {
	var b strings.Builder
	ids := g.shortIDs()
	b.WriteString("digraph asset_graph {\n")
	b.WriteString("  rankdir=LR;\n")
	fmt.Fprintf(&b, "  label=\"%s\";\n", dotEscape("asset graph of "+g.Agent))
	b.WriteString("  node [fontname=\"Helvetica\"];\n")
	for _, n := range g.Nodes {
		style := ""
		if n.Kind == KindAgent {
			style = ", style=bold"
		}
		fmt.Fprintf(&b, "  %s [label=\"%s\", shape=%s%s];\n", ids[n.ID], dotEscape(string(n.Kind)+": "+n.Label), dotShapes[n.Kind], style)
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s -> %s [label=\"%s\"];\n", ids[e.From], ids[e.To], dotEscape(edgeLabel(e)))
	}
	b.WriteString("}\n")
	return b.String()
}

// mermaidShapes are the Mermaid flowchart shape delimiters of node kinds.
var mermaidShapes = map[NodeKind][2]string{
	KindAgent: {"[", "]"}, KindTenant: {"[/", "/]"}, KindOwner: {"(", ")"}, KindSponsor: {"(", ")"},
	KindClient: {"[[", "]]"}, KindKey: {"{{", "}}"}, KindScope: {"([", "])"}, KindRole: {"([", "])"},
	KindResource: {"[/", "/]"}, KindDependency: {"[(", ")]"}, KindResourceSeen: {"[\\", "\\]"},
}

// Mermaid renders the graph as a Mermaid flowchart. Node IDs are n0, n1, … in the graph's order;
// every label is quoted and every character outside a small safe set is written as a Mermaid entity
// code (#<decimal>;), so no label can end its node, start an edge or inject markup.
func (g *Graph) Mermaid() string {
	var b strings.Builder
	ids := g.shortIDs()
	b.WriteString("flowchart LR\n")
	for _, n := range g.Nodes {
		sh := mermaidShapes[n.Kind]
		fmt.Fprintf(&b, "  %s%s\"%s\"%s\n", ids[n.ID], sh[0], mermaidEscape(string(n.Kind)+": "+n.Label), sh[1])
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s -->|\"%s\"| %s\n", ids[e.From], mermaidEscape(edgeLabel(e)), ids[e.To])
	}
	return b.String()
}

func (g *Graph) shortIDs() map[string]string {
	ids := make(map[string]string, len(g.Nodes))
	for i, n := range g.Nodes {
		ids[n.ID] = "n" + strconv.Itoa(i)
	}
	return ids
}

// edgeLabel is the edge's kind, with its count when telemetry gave one.
func edgeLabel(e Edge) string {
	if c, ok := e.Attrs["count"]; ok {
		return string(e.Kind) + " (" + c + ")"
	}
	return string(e.Kind)
}

// dotEscape escapes s for a double-quoted DOT string: backslashes and quotes are escaped, a line
// break becomes the escape \n, other control characters are dropped.
func dotEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '\n':
			b.WriteString(`\n`)
		case unicode.IsControl(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mermaidEscape keeps letters and digits of ASCII, spaces and a few punctuation characters that mean
// nothing inside a quoted Mermaid label, and writes every other character as #<decimal>;.
func mermaidEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)), r == ' ', strings.ContainsRune("_.,:/@+=-", r):
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, "#%d;", r)
		}
	}
	return b.String()
}
