package cli_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newJWKS is a JWK Set of one fresh P-256 public key.
func newJWKS(t *testing.T) string {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pt := k.PublicKey().Bytes() // 0x04 || X || Y
	enc := base64.RawURLEncoding.EncodeToString
	return fmt.Sprintf(`{"keys":[{"use":"sig","kty":"EC","kid":"k2","crv":"P-256","alg":"ES256","x":%q,"y":%q}]}`, enc(pt[1:33]), enc(pt[33:]))
}

// TestAgentsAsCodeRefusesOtherKeys: an agent whose keys in the registry differ from the manifest's
// is refused by plan (exit 2) and apply, instead of being updated under keys nobody declared.
func TestAgentsAsCodeRefusesOtherKeys(t *testing.T) {
	p := startAACPlatform(t)
	dir := filepath.Join(t.TempDir(), "support")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, map[string]string{"key.json": aacKey, "a.yaml": aacManifest("faq-dev", "dev", "internal", "")})
	if code, out, errOut := run(t, p.configDir, "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: exit %d %s %s", code, out, errOut)
	}
	etag := p.get(t, "faq-dev").GetEtag()
	writeManifests(t, dir, map[string]string{"key.json": newJWKS(t)})
	code, out, _ := run(t, p.configDir, "plan", "-f", dir)
	if code != 2 || !strings.Contains(out, "public keys in the registry differ from the manifest's") {
		t.Fatalf("plan with other keys: exit %d, want 2\n%s", code, out)
	}
	code, _, errOut := run(t, p.configDir, "apply", "-f", dir)
	if code != 1 || !strings.Contains(errOut, "nothing was applied") {
		t.Fatalf("apply with other keys: exit %d %s", code, errOut)
	}
	if got := p.get(t, "faq-dev").GetEtag(); got != etag {
		t.Fatalf("apply changed the agent (etag %s → %s)", etag, got)
	}
}
