package ingest

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// object appends the members of a row's JSON detail to a buffer, byte for byte what json.Marshal
// of a map with the same members writes: members must be added in ascending key order (the order
// json.Marshal sorts a map's keys into), strings are escaped as encoding/json escapes them (HTML
// characters included). It replaces building a map per row and marshalling it, which was a sixth of
// the ingest consumer's CPU.
type object struct {
	b       []byte
	bad     bool    // a value json.Marshal refuses (a time beyond year 9999): the detail is EmptyDetail
	scratch *[]byte // where done leaves the buffer for the next object, if set
}

// newObject starts an object in *scratch's buffer when scratch is set (the rows of one event share
// one buffer; done copies each detail out of it), else in a new one.
func newObject(scratch *[]byte) object {
	if scratch != nil && *scratch != nil {
		return object{b: append((*scratch)[:0], '{'), scratch: scratch}
	}
	return object{b: append(make([]byte, 0, 256), '{'), scratch: scratch}
}

func (o *object) key(k string) {
	if len(o.b) > 1 {
		o.b = append(o.b, ',')
	}
	o.b = appendString(o.b, k)
	o.b = append(o.b, ':')
}

func (o *object) str(k, v string) {
	o.key(k)
	o.b = appendString(o.b, v)
}

func (o *object) int(k string, v int64) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, v, 10)
}

func (o *object) bool(k string, v bool) {
	o.key(k)
	o.b = strconv.AppendBool(o.b, v)
}

// strs adds a string array; nil is written as null, as json.Marshal writes a nil slice.
func (o *object) strs(k string, v []string) {
	o.key(k)
	if v == nil {
		o.b = append(o.b, "null"...)
		return
	}
	o.b = append(o.b, '[')
	for i, s := range v {
		if i > 0 {
			o.b = append(o.b, ',')
		}
		o.b = appendString(o.b, s)
	}
	o.b = append(o.b, ']')
}

// float adds a float64 as encoding/json formats it.
func (o *object) float(k string, v float64) {
	o.key(k)
	abs := math.Abs(v)
	if math.IsInf(v, 0) || math.IsNaN(v) || (abs != 0 && (abs < 1e-6 || abs >= 1e21)) {
		b, err := json.Marshal(v)
		if err != nil {
			o.bad = true
			return
		}
		o.b = append(o.b, b...)
		return
	}
	o.b = strconv.AppendFloat(o.b, v, 'f', -1, 64)
}

func (o *object) time(k string, t time.Time) {
	o.key(k)
	b, err := t.MarshalJSON()
	if err != nil {
		o.bad = true
		return
	}
	o.b = append(o.b, b...)
}

// done returns the detail.
func (o *object) done() string {
	o.b = append(o.b, '}')
	if o.scratch != nil {
		*o.scratch = o.b[:0]
	}
	if o.bad {
		return store.EmptyDetail
	}
	return string(o.b)
}

// appendString appends s as a JSON string exactly as encoding/json writes it: a string of plain
// printable ASCII is copied as is, anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil { // cannot happen for a string
				return append(b, `""`...)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
