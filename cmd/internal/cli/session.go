package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// session is what `agentctl login` remembers: where the platform is and which credential to use.
// It never holds a password or a long-lived token: each command signs a fresh assertion with the
// credential's private key and gets a short-lived access token from the issuer.
type session struct {
	Server         string    `json:"server"`
	Tenant         string    `json:"tenant"`
	CredentialFile string    `json:"credential_file"`
	Principal      string    `json:"principal"`
	LoginTime      time.Time `json:"login_time"`
	// CAFile is the CA file the server's certificate is verified against (--ca at login).
	CAFile string `json:"ca_file,omitempty"`
	// TLS is set when the server is reached over TLS (--ca or --tls at login).
	TLS bool `json:"tls,omitempty"`
}

// configPath is the session file location.
func (g *globals) configPath() string {
	dir := g.configDir
	if dir == "" {
		dir = os.Getenv("AGENTID_CONFIG_DIR")
	}
	if dir == "" {
		if ucd, err := os.UserConfigDir(); err == nil {
			dir = filepath.Join(ucd, "agentid")
		} else {
			dir = ".agentid-cli"
		}
	}
	return filepath.Join(dir, "session.json")
}

func loadSession(path string) (*session, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("not logged in: run `agentctl login --dev` first")
	}
	if err != nil {
		return nil, err
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("session file %s is corrupt: %w (run agentctl login again)", path, err)
	}
	return &s, nil
}

func saveSession(path string, s *session) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
