package dev

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKEKIsCreatedOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.key")
	first, err := loadOrCreateKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 32 {
		t.Fatalf("KEK has %d bytes, want 32", len(first))
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	again, err := loadOrCreateKEK(path)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("reloaded KEK differs (%v): a restart would lose every sealed signing key", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable KEK: got %v, want a refusal", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not hex"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKEK(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt KEK: got %v, want an error naming the file", err)
	}
}

func TestCredentialFollowsThePublicURLButKeepsItsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials", "bootstrap-admin.json")
	c1, err := loadOrCreateCredential(path, BootstrapAdminClientID, "http://127.0.0.1:8080/t/system")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := loadOrCreateCredential(path, BootstrapAdminClientID, "http://127.0.0.1:9090/t/system")
	if err != nil {
		t.Fatal(err)
	}
	if c2.Issuer != "http://127.0.0.1:9090/t/system" || c2.TokenURL != "http://127.0.0.1:9090/t/system/oauth2/token" {
		t.Fatalf("credential issuer %q token_url %q after the URL changed", c2.Issuer, c2.TokenURL)
	}
	if c1.KeyID() != c2.KeyID() || c2.ClientID != BootstrapAdminClientID || c2.Tenant != "system" {
		t.Fatalf("credential identity changed: kid %s → %s, client %s, tenant %s", c1.KeyID(), c2.KeyID(), c2.ClientID, c2.Tenant)
	}
}
