package store

import (
	"crypto/sha256"
	"encoding/binary"
)

// Key names a (tenant, id) pair in 16 bytes: the first 16 bytes of the SHA-256 of the tenant's
// length, the tenant and the id. In-memory indexes of millions of rows or tokens keep it instead of
// the two strings (a map slot of 16 bytes instead of two string headers and their bytes). The same
// id in two tenants gives two keys, as do two splits of the same bytes; two pairs share a key only
// through a second preimage of SHA-256 (by chance, odds of about n²/2¹²⁹ among n keys).
type Key [16]byte

// KeyOf returns the key of the id in the tenant.
func KeyOf(tenant, id string) Key {
	var buf [256]byte // no allocation for the usual lengths
	b := binary.AppendUvarint(buf[:0], uint64(len(tenant)))
	b = append(b, tenant...)
	b = append(b, id...)
	sum := sha256.Sum256(b)
	return Key(sum[:16])
}
