package app

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/agentid/agentid/services/issuer/internal/keys"
	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// dpopNonceInfo is the HKDF info of the DPoP nonce key: it keeps the derived key apart from every
// other use of the KEK.
const dpopNonceInfo = "agentid issuer DPoP nonce HMAC key v1"

// DPoPNonceKey derives the key that authenticates DPoP server nonces from the key-encryption key
// (HKDF-SHA256 with its own info string), so every replica sharing the KEK accepts the others' nonces.
func DPoPNonceKey(kek []byte) ([]byte, error) {
	if len(kek) != keys.KEKSize {
		return nil, fmt.Errorf("DPoP nonce key: the KEK must be %d bytes", keys.KEKSize)
	}
	k, err := hkdf.Key(sha256.New, kek, nil, dpopNonceInfo, oauth.DPoPNonceKeySize)
	if err != nil {
		return nil, fmt.Errorf("DPoP nonce key: %w", err)
	}
	return k, nil
}

// LoadKEKFile reads a 32-byte key-encryption key stored raw, as hex or as base64 (surrounding
// whitespace ignored). The file must not be readable or writable by group or others.
func LoadKEKFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("issuer: a key-encryption key file is required")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("issuer: key-encryption key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("issuer: key-encryption key file %s has mode %#o, accessible by group or others; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("issuer: key-encryption key: %w", err)
	}
	return ParseKEK(b)
}

// ParseKEK decodes a 32-byte key-encryption key given raw, as hex or as base64.
func ParseKEK(b []byte) ([]byte, error) {
	if len(b) == keys.KEKSize {
		return bytes.Clone(b), nil
	}
	text := string(bytes.TrimSpace(b))
	if k, err := hex.DecodeString(text); err == nil && len(k) == keys.KEKSize {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(text); err == nil && len(k) == keys.KEKSize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("issuer: the key-encryption key must be %d bytes (raw, hex or base64)", keys.KEKSize)
}
