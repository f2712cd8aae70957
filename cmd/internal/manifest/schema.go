package manifest

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// SchemaID is the $id of the published JSON Schema (schemas/agent.v1.json in the repository).
const SchemaID = "https://agentid.dev/schemas/agent.v1.json"

// JSONSchema returns the JSON Schema (draft 2020-12) of a `kind: Agent` manifest, derived from the
// Go types this package reads manifests into, so the published schema cannot drift from the
// reader. Rules that need more than a schema (broad scopes, key material, expiry in the future,
// duplicate names) are checked by Load only.
func JSONSchema() ([]byte, error) {
	s := schemaOf(reflect.TypeFor[Manifest](), nil)
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = SchemaID
	s["title"] = "agentid Agent manifest (" + APIVersion + ")"
	s["description"] = "An agent declared as code: apply with `agentctl apply -f DIR`."
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// schemaOf is the schema of a value of type t, read from field f's tags when it is a field.
func schemaOf(t reflect.Type, f *reflect.StructField) map[string]any {
	s := map[string]any{}
	if f != nil {
		if d := f.Tag.Get("doc"); d != "" {
			s["description"] = d
		}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return mergeInto(s, schemaOf(t.Elem(), nil))
	case reflect.Struct:
		s["type"] = "object"
		s["additionalProperties"] = false
		props := map[string]any{}
		var required []string
		for i := range t.NumField() {
			sf := t.Field(i)
			name := yamlName(sf)
			if name == "" {
				continue
			}
			props[name] = schemaOf(sf.Type, &sf)
			if sf.Tag.Get("required") == "true" {
				required = append(required, name)
			}
		}
		s["properties"] = props
		if len(required) > 0 {
			s["required"] = required
		}
		if f != nil {
			if one := f.Tag.Get("exactlyOne"); one != "" {
				var alts []any
				for _, name := range strings.Split(one, "|") {
					alts = append(alts, map[string]any{"required": []string{name}})
				}
				s["oneOf"] = alts
			}
		}
	case reflect.String:
		s["type"] = "string"
		stringRules(s, f)
		if f != nil && f.Tag.Get("required") == "true" {
			if _, ok := s["pattern"]; !ok {
				if _, ok := s["enum"]; !ok {
					s["pattern"] = `\S`
				}
			}
		}
	case reflect.Slice:
		s["type"] = "array"
		item := map[string]any{}
		switch t.Elem().Kind() {
		case reflect.String:
			item["type"] = "string"
			stringRules(item, f)
			item["minLength"] = 1
		case reflect.Map:
			item["type"] = "object"
		default:
			item = schemaOf(t.Elem(), nil)
		}
		s["items"] = item
		if f != nil {
			intTag(s, f, "minItems", "minItems")
			intTag(s, f, "maxItems", "maxItems")
			if f.Tag.Get("unique") == "true" {
				s["uniqueItems"] = true
			}
		}
	case reflect.Map:
		s["type"] = "object"
		value := map[string]any{"type": "string"}
		if f != nil {
			stringRules(value, f)
			if kp := f.Tag.Get("keyPattern"); kp != "" {
				names := map[string]any{"pattern": kp}
				if rp := f.Tag.Get("reservedKeyPrefix"); rp != "" {
					names["not"] = map[string]any{"pattern": "^" + regexp.QuoteMeta(rp)}
				}
				s["propertyNames"] = names
			}
			intTag(s, f, "maxProperties", "maxProperties")
		}
		s["additionalProperties"] = value
	}
	return s
}

// stringRules copies a field's string rules (enum, pattern, maxLength) into s.
func stringRules(s map[string]any, f *reflect.StructField) {
	if f == nil {
		return
	}
	if enum := f.Tag.Get("enum"); enum != "" {
		s["enum"] = strings.Split(enum, "|")
	}
	if pat := f.Tag.Get("pattern"); pat != "" {
		s["pattern"] = pat
	}
	intTag(s, f, "maxLength", "maxLength")
}

// intTag copies an integer tag of f into s under key.
func intTag(s map[string]any, f *reflect.StructField, tag, key string) {
	if n, err := strconv.Atoi(f.Tag.Get(tag)); err == nil {
		s[key] = n
	}
}

// mergeInto adds the entries of from that s lacks.
func mergeInto(s, from map[string]any) map[string]any {
	for k, v := range from {
		if _, ok := s[k]; !ok {
			s[k] = v
		}
	}
	return s
}
