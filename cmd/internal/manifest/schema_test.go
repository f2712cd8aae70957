package manifest_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/agentid/agentid/cmd/internal/manifest"
)

var update = flag.Bool("update", false, "rewrite schemas/agent.v1.json from the Go types")

// schemaFile is the published schema in the repository.
func schemaFile(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "..", "schemas", "agent.v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPublishedSchemaIsGeneratedFromTheTypes fails when schemas/agent.v1.json and the Go types
// disagree: regenerate it with `go test ./cmd/internal/manifest -run Schema -update`.
func TestPublishedSchemaIsGeneratedFromTheTypes(t *testing.T) {
	want, err := manifest.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(schemaFile(t), want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(schemaFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("schemas/agent.v1.json differs from the Go types: run go test ./cmd/internal/manifest -run Schema -update")
	}
}

// TestSchemaCoversEveryField walks the Go types and the schema side by side: every YAML field is a
// schema property and every property a field, with the same required list.
func TestSchemaCoversEveryField(t *testing.T) {
	b, err := manifest.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, typ reflect.Type, s map[string]any)
	walk = func(path string, typ reflect.Type, s map[string]any) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			if typ.Kind() == reflect.Slice {
				s, _ = s["items"].(map[string]any)
			}
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		props, _ := s["properties"].(map[string]any)
		if s["additionalProperties"] != false {
			t.Errorf("%s: the schema allows unknown fields", path)
		}
		var fields, required []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || name == "" {
				continue
			}
			fields = append(fields, name)
			if f.Tag.Get("required") == "true" {
				required = append(required, name)
			}
			sub, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s.%s: not in the schema", path, name)
				continue
			}
			walk(path+"."+name, f.Type, sub)
		}
		var names []string
		for k := range props {
			names = append(names, k)
		}
		slices.Sort(names)
		slices.Sort(fields)
		if !slices.Equal(names, fields) {
			t.Errorf("%s: schema properties %v, Go fields %v", path, names, fields)
		}
		var req []string
		if r, ok := s["required"].([]any); ok {
			for _, x := range r {
				req = append(req, x.(string))
			}
		}
		slices.Sort(req)
		slices.Sort(required)
		if !slices.Equal(req, required) {
			t.Errorf("%s: schema requires %v, Go types %v", path, req, required)
		}
	}
	walk("manifest", reflect.TypeFor[manifest.Manifest](), s)
}

// TestSchemaAndReaderAgree validates the same documents with the published schema and with Load:
// the examples pass both, and documents breaking a structural rule fail both.
func TestSchemaAndReaderAgree(t *testing.T) {
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(schemaFile(t))
	if err != nil {
		t.Fatalf("the published schema does not compile: %v", err)
	}
	validate := func(t *testing.T, doc string) error {
		t.Helper()
		var v any
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return sch.Validate(inst)
	}
	files, err := filepath.Glob(filepath.Join(exampleDir(t), "*", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range strings.Split(string(data), "\n---\n") {
			if err := validate(t, d); err != nil {
				t.Errorf("%s document %d: the schema refuses an example: %v", f, i, err)
			}
		}
	}
	bad := map[string]string{
		"unknown field":    strings.Replace(doc("a"), "  owner: team:support\n", "  owner: team:support\n  ownr: x\n", 1),
		"bad enum":         strings.Replace(doc("a"), "environment: dev", "environment: moon", 1),
		"missing owner":    strings.Replace(doc("a"), "  owner: team:support\n", "", 1),
		"bad scope":        strings.Replace(doc("a"), "scopes: [faq.read, tickets.read]", "scopes: [Faq]", 1),
		"duplicate scope":  strings.Replace(doc("a"), "scopes: [faq.read, tickets.read]", "scopes: [faq.read, faq.read]", 1),
		"no scopes":        strings.Replace(doc("a"), "scopes: [faq.read, tickets.read]", "scopes: []", 1),
		"both key forms":   strings.Replace(doc("a"), "    jwksFile: key.json\n", "    jwksFile: key.json\n    jwks: {keys: [{kty: EC}]}\n", 1),
		"reserved label":   strings.Replace(doc("a"), "team: support", "agentid.dev/source: other", 1),
		"bad name":         doc("FAQ_bot"),
		"bad expiry":       strings.Replace(doc("a"), "expires: 30d", "expires: next week", 1),
		"unknown dep kind": doc("a") + "  dependencies: [{kind: ftp, uri: ftp://x}]\n",
		"wrong version":    strings.Replace(doc("a"), "agentid.dev/v1", "agentid.dev/v2", 1),
	}
	for name, d := range bad {
		t.Run(name, func(t *testing.T) {
			if err := validate(t, d); err == nil {
				t.Error("the schema accepts it")
			}
			if _, probs := load(t, writeSet(t, map[string]string{"a.yaml": d})); len(probs) == 0 {
				t.Error("Load accepts it")
			}
		})
	}
}
