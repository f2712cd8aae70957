package store_test

import (
	"strings"
	"testing"

	"github.com/agentid/agentid/services/monitor/internal/store"
)

// TestKeysOfDifferentPairsDiffer: the key of (tenant, id) is stable, differs between tenants for the
// same id, and is not the key of another split of the same bytes, short or beyond the stack buffer.
func TestKeysOfDifferentPairsDiffer(t *testing.T) {
	long := strings.Repeat("t", 300)
	pairs := [][2]string{{"ab", "c"}, {"a", "bc"}, {"", "abc"}, {"abc", ""}, {"acme", "id-1"}, {"globex", "id-1"},
		{long, "x"}, {long + "x", ""}, {long[:299], "tx"}}
	seen := map[store.Key][2]string{}
	for _, p := range pairs {
		k := store.KeyOf(p[0], p[1])
		if k != store.KeyOf(p[0], p[1]) {
			t.Fatalf("key of %q is not stable", p)
		}
		if q, dup := seen[k]; dup {
			t.Fatalf("%q and %q share a key", p, q)
		}
		seen[k] = p
	}
}
