package eventsapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// cursorVersion is the version of the cursor encoding.
const cursorVersion = 1

// cursor is the decoded resume token: the tenant it belongs to, the last processed sequence of every
// stream whose position is known, and, for a subscription that started at a time, that time (the
// start of the streams with no known position yet).
type cursor struct {
	V      int               `json:"v"`
	Tenant string            `json:"t"`
	Seqs   map[string]uint64 `json:"s,omitempty"`
	From   *time.Time        `json:"f,omitempty"`
}

// encode renders the cursor as an opaque URL-safe token.
func (c cursor) encode() string {
	c.V = cursorVersion
	b, _ := json.Marshal(c) // a struct of strings, numbers and a time: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses a token made by encode for tenant; streams names the streams it may mention.
func decodeCursor(token, tenant string, streams []string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return c, fmt.Errorf("not a cursor returned by Subscribe")
	}
	if err := json.Unmarshal(b, &c); err != nil || c.V != cursorVersion {
		return c, fmt.Errorf("not a cursor returned by Subscribe")
	}
	if c.Tenant != tenant {
		return c, fmt.Errorf("the cursor belongs to another subscription's tenant")
	}
	for _, s := range slices.Sorted(maps.Keys(c.Seqs)) {
		if !slices.Contains(streams, s) {
			return c, fmt.Errorf("the cursor names an unknown stream %q", s)
		}
	}
	return c, nil
}
