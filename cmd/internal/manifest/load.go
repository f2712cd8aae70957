package manifest

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// maxFileSize bounds one manifest file: manifests are small, and a huge file is a mistake.
const maxFileSize = 4 << 20

// Problem is one error in a manifest set: where it is and which rule it breaks.
type Problem struct {
	// File is the file, as reached from the paths given to Load.
	File string `json:"file"`
	// Line is the line in File (1-based); 0 when the problem is the file itself.
	Line int `json:"line,omitempty"`
	// Path is the field's path in the document (e.g. `spec.scopes[1]`); empty for the document.
	Path string `json:"path,omitempty"`
	// Rule is what is wrong, in a sentence.
	Rule string `json:"rule"`
}

// String renders the problem as `file:line: path: rule`.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Rule)
	return b.String()
}

// Problems is every problem of a manifest set; as an error it lists them one a line.
type Problems []Problem

// Error lists the problems, one a line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Set is the manifests read from a list of files and directories.
type Set struct {
	// Manifests in the order read: files in lexical order, documents in file order.
	Manifests []*Manifest
	// Files are the files read.
	Files []string
}

// Options tune Load.
type Options struct {
	// DefaultTenant is the tenant of manifests without metadata.tenant (used to find duplicates).
	DefaultTenant string
	// Now is the clock expiry times are checked against; default time.Now.
	Now func() time.Time
}

// Load reads every manifest of paths (files, or directories searched recursively for *.yaml and
// *.yml) and checks each document. When anything is wrong it returns the Set read so far and every
// problem of every document as Problems, never only the first.
func Load(paths []string, opts Options) (*Set, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(paths) == 0 {
		return nil, Problems{{File: "-f", Rule: "give at least one manifest file or directory"}}
	}
	set := &Set{}
	var probs Problems
	for _, p := range paths {
		files, err := manifestFiles(p)
		if err != nil {
			probs = append(probs, Problem{File: p, Rule: err.Error()})
			continue
		}
		for _, f := range files {
			if slices.Contains(set.Files, f) {
				continue
			}
			set.Files = append(set.Files, f)
			ms, ps := loadFile(f, opts)
			set.Manifests = append(set.Manifests, ms...)
			probs = append(probs, ps...)
		}
	}
	probs = append(probs, duplicates(set.Manifests, opts.DefaultTenant)...)
	if len(probs) > 0 {
		return set, probs
	}
	return set, nil
}

// manifestFiles lists the manifest files of p: p itself when it is a file, else the *.yaml and *.yml
// files under it in lexical order (directories whose name starts with "." are skipped).
func manifestFiles(p string) ([]string, error) {
	info, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", errors.Unwrap(err))
	}
	if !info.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := strings.ToLower(filepath.Ext(path)); ext == ".yaml" || ext == ".yml" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if len(files) == 0 {
		return nil, errors.New("no *.yaml or *.yml files in this directory")
	}
	slices.Sort(files)
	return files, nil
}

// yamlLineRE finds the line in a YAML syntax error.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// loadFile reads the documents of one file.
func loadFile(file string, opts Options) ([]*Manifest, Problems) {
	data, err := readLimited(file)
	if err != nil {
		return nil, Problems{{File: file, Rule: err.Error()}}
	}
	var (
		out   []*Manifest
		probs Problems
	)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p := Problem{File: file, Rule: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Rule = "invalid YAML: " + m[2]
			}
			probs = append(probs, p)
			break // the decoder cannot resynchronise after a syntax error
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue // an empty document, e.g. after a trailing `---`
		}
		m := &Manifest{File: file, Line: root.Line, Dir: filepath.Dir(file), lines: map[string]int{}}
		r := &reader{m: m}
		r.value(root, reflect.ValueOf(m).Elem(), "", nil)
		r.semantic(opts)
		slices.SortStableFunc(r.probs, func(a, b Problem) int { return cmp.Or(a.Line-b.Line, strings.Compare(a.Path, b.Path)) })
		probs = append(probs, r.probs...)
		out = append(out, m)
	}
	return out, probs
}

// readLimited reads a file of at most maxFileSize bytes.
func readLimited(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", errors.Unwrap(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("is larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// reader fills one Manifest from its YAML node, collecting problems.
type reader struct {
	m     *Manifest
	probs Problems
}

func (r *reader) fail(line int, path, rule string) {
	r.probs = append(r.probs, Problem{File: r.m.File, Line: line, Path: path, Rule: rule})
}

// value reads node n into v (at path), checking the rules of the field's tags.
func (r *reader) value(n *yaml.Node, v reflect.Value, path string, f *reflect.StructField) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if _, ok := r.m.lines[path]; !ok && path != "" {
		r.m.lines[path] = n.Line
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return
		}
		nv := reflect.New(v.Type().Elem())
		r.value(n, nv.Elem(), path, f)
		v.Set(nv)
	case reflect.Struct:
		r.structValue(n, v, path, f)
	case reflect.String:
		if s, ok := r.scalar(n, path, f); ok {
			v.SetString(s)
		}
	case reflect.Slice:
		r.sliceValue(n, v, path, f)
	case reflect.Map:
		r.mapValue(n, v, path, f)
	default:
		r.fail(n.Line, path, "has a type this reader does not support") // a bug in the types above
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// structValue reads a mapping into a struct: every key must be a field, every required field set.
func (r *reader) structValue(n *yaml.Node, v reflect.Value, path string, _ *reflect.StructField) {
	if n.Kind != yaml.MappingNode {
		r.fail(n.Line, path, "must be a mapping")
		return
	}
	t := v.Type()
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		kp := join(path, key)
		if k.Kind != yaml.ScalarNode {
			r.fail(k.Line, path, "keys must be plain names")
			continue
		}
		if first, dup := seen[key]; dup {
			r.fail(k.Line, kp, fmt.Sprintf("is defined twice (first at line %d)", first))
			continue
		}
		seen[key] = k.Line
		sf, ok := fieldByName(t, key)
		if !ok {
			r.fail(k.Line, kp, fmt.Sprintf("unknown field %q (known: %s)", key, strings.Join(fieldNames(t), ", ")))
			continue
		}
		r.m.lines[kp] = k.Line
		if isNull(val) && sf.Type.Kind() != reflect.Pointer {
			continue // `field:` with no value is as if absent; required fields are caught below
		}
		r.value(val, v.FieldByIndex(sf.Index), kp, &sf)
	}
	for i := range t.NumField() {
		sf := t.Field(i)
		name := yamlName(sf)
		if name == "" {
			continue
		}
		fp := join(path, name)
		if sf.Tag.Get("required") == "true" && isZero(v.Field(i)) && !r.reportedUnder(fp) {
			line := r.m.LineOf(path)
			if l, ok := seen[name]; ok {
				line = l
			}
			r.fail(line, fp, "is required")
		}
		if one := sf.Tag.Get("exactlyOne"); one != "" {
			r.exactlyOne(v.Field(i), fp, strings.Split(one, "|"), r.m.LineOf(fp))
		}
	}
}

// reportedUnder says whether a problem was already reported at path or below it.
func (r *reader) reportedUnder(path string) bool {
	for _, p := range r.probs {
		if p.Path == path || strings.HasPrefix(p.Path, path+".") || strings.HasPrefix(p.Path, path+"[") {
			return true
		}
	}
	return false
}

// exactlyOne checks that exactly one of the named fields of struct v is set.
func (r *reader) exactlyOne(v reflect.Value, path string, names []string, line int) {
	if v.Kind() != reflect.Struct || r.reportedUnder(path) {
		return
	}
	set := 0
	for _, name := range names {
		if sf, ok := fieldByName(v.Type(), name); ok && !isZero(v.FieldByIndex(sf.Index)) {
			set++
		}
	}
	if set != 1 {
		r.fail(line, path, "give exactly one of "+strings.Join(names, " and "))
	}
}

func isZero(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	default:
		return v.IsZero()
	}
}

// scalar reads a string field: a YAML string (or a timestamp, which is read as written), trimmed,
// checked against the field's enum, pattern, length and the absence of control characters.
func (r *reader) scalar(n *yaml.Node, path string, f *reflect.StructField) (string, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!timestamp") {
		what := "a " + kindName(n)
		if n.Kind == yaml.ScalarNode {
			what = fmt.Sprintf("%s %s (quote it to make it a string)", kindName(n), n.Value)
		}
		r.fail(n.Line, path, "must be a string, not "+what)
		return "", false
	}
	s := strings.TrimSpace(n.Value)
	if f == nil {
		return s, true
	}
	if !utf8.ValidString(s) {
		r.fail(n.Line, path, "must be valid UTF-8")
		return "", false
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		r.fail(n.Line, path, "must not contain control characters (line breaks included)")
		return "", false
	}
	if s == "" {
		if f.Type.Kind() == reflect.Slice {
			r.fail(n.Line, path, "must not be empty")
			return "", false
		}
		return "", true // a required field is reported by the enclosing struct
	}
	if enum := f.Tag.Get("enum"); enum != "" {
		values := strings.Split(enum, "|")
		if !slices.Contains(values, s) {
			r.fail(n.Line, path, fmt.Sprintf("%q is not one of %s", s, strings.Join(values, ", ")))
			return "", false
		}
	}
	if pat := f.Tag.Get("pattern"); pat != "" && !regexp.MustCompile(pat).MatchString(s) {
		rule := f.Tag.Get("rule")
		if rule == "" {
			rule = "must match " + pat
		}
		r.fail(n.Line, path, fmt.Sprintf("%q %s", s, rule))
		return "", false
	}
	if max, _ := strconv.Atoi(f.Tag.Get("maxLength")); max > 0 && utf8.RuneCountInString(s) > max {
		r.fail(n.Line, path, fmt.Sprintf("must be at most %d characters", max))
		return "", false
	}
	return s, true
}

// sliceValue reads a sequence into a slice.
func (r *reader) sliceValue(n *yaml.Node, v reflect.Value, path string, f *reflect.StructField) {
	if n.Kind != yaml.SequenceNode {
		r.fail(n.Line, path, "must be a list, not "+kindName(n))
		return
	}
	if f != nil {
		if max, _ := strconv.Atoi(f.Tag.Get("maxItems")); max > 0 && len(n.Content) > max {
			r.fail(n.Line, path, fmt.Sprintf("must have at most %d entries", max))
			return
		}
		if min, _ := strconv.Atoi(f.Tag.Get("minItems")); len(n.Content) < min {
			r.fail(n.Line, path, fmt.Sprintf("must have at least %d entries", min))
			return
		}
	}
	out := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	seen := map[string]int{}
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		ev := reflect.New(v.Type().Elem()).Elem()
		if ev.Kind() == reflect.Map && ev.Type().Elem().Kind() == reflect.Interface {
			r.freeObject(item, ev, ip)
		} else {
			r.value(item, ev, ip, f)
		}
		if ev.Kind() == reflect.String && f != nil && f.Tag.Get("unique") == "true" && ev.String() != "" {
			if first, dup := seen[ev.String()]; dup {
				r.fail(item.Line, ip, fmt.Sprintf("%q is listed twice (first at line %d)", ev.String(), first))
			}
			seen[ev.String()] = item.Line
		}
		out = reflect.Append(out, ev)
	}
	v.Set(out)
}

// freeObject reads a mapping of any content (a JWK) into a map[string]any.
func (r *reader) freeObject(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		r.fail(n.Line, path, "must be a mapping, not "+kindName(n))
		return
	}
	m := map[string]any{}
	if err := n.Decode(&m); err != nil {
		r.fail(n.Line, path, "cannot be read: "+strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	v.Set(reflect.ValueOf(m))
}

// mapValue reads a mapping of strings (labels).
func (r *reader) mapValue(n *yaml.Node, v reflect.Value, path string, f *reflect.StructField) {
	if n.Kind != yaml.MappingNode {
		r.fail(n.Line, path, "must be a mapping, not "+kindName(n))
		return
	}
	if f != nil {
		if max, _ := strconv.Atoi(f.Tag.Get("maxProperties")); max > 0 && len(n.Content)/2 > max {
			r.fail(n.Line, path, fmt.Sprintf("must have at most %d entries", max))
			return
		}
	}
	out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	var keyRE *regexp.Regexp
	if f != nil && f.Tag.Get("keyPattern") != "" {
		keyRE = regexp.MustCompile(f.Tag.Get("keyPattern"))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := join(path, k.Value)
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			r.fail(k.Line, kp, "keys must be strings")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			r.fail(k.Line, kp, fmt.Sprintf("is defined twice (first at line %d)", first))
			continue
		}
		seen[k.Value] = k.Line
		r.m.lines[kp] = k.Line
		if keyRE != nil && !keyRE.MatchString(k.Value) {
			r.fail(k.Line, kp, fmt.Sprintf("key %q %s", k.Value, f.Tag.Get("rule")))
			continue
		}
		if rp := reservedPrefix(f); rp != "" && strings.HasPrefix(k.Value, rp) {
			r.fail(k.Line, kp, "keys starting with "+rp+" are reserved for agentctl")
			continue
		}
		s, ok := r.scalar(val, kp, f)
		if ok {
			out.SetMapIndex(reflect.ValueOf(k.Value), reflect.ValueOf(s))
		}
	}
	v.Set(out)
}

// kindName names what a node is, for messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int":
			return "the number"
		case "!!float":
			return "the number"
		case "!!bool":
			return "the boolean"
		case "!!null":
			return "null"
		}
		return "the value"
	}
	return "an unsupported YAML node"
}

// join appends a field name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// yamlName is a struct field's YAML name; "" for fields that are not part of the document.
func yamlName(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if name == "-" || !sf.IsExported() {
		return ""
	}
	return name
}

// fieldByName finds the struct field with YAML name name.
func fieldByName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if sf := t.Field(i); yamlName(sf) == name {
			return sf, true
		}
	}
	return reflect.StructField{}, false
}

// fieldNames lists the YAML names of t's fields.
func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// reservedPrefix is the key prefix field f reserves ("" for none).
func reservedPrefix(f *reflect.StructField) string {
	if f == nil {
		return ""
	}
	return f.Tag.Get("reservedKeyPrefix")
}
