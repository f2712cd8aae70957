package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/agentid/agentid/pkg/fsutil"
)

// SeedFileExt is the extension of a seed file: <identity>.nk.
const SeedFileExt = ".nk"

// SeedPath is the seed file of identity name in dir: dir/<name>.nk.
func SeedPath(dir, name string) string { return filepath.Join(dir, name+SeedFileExt) }

// ReadSeedFile reads the nkey user seed in path (the seed alone, or a decorated credentials file),
// refusing a file that others may read.
func ReadSeedFile(path string) (nkeys.KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("nats nkey seed file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("nats nkey seed file %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats nkey seed file: %w", err)
	}
	var kp nkeys.KeyPair
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("SU")) {
		kp, err = nkeys.FromSeed(bytes.TrimSpace(b))
	} else {
		kp, err = nkeys.ParseDecoratedUserNKey(b)
	}
	if err != nil {
		return nil, fmt.Errorf("nats nkey seed file %s: not an nkey user seed: %w", path, err)
	}
	if pub, err := kp.PublicKey(); err != nil || !publicKeyPattern.MatchString(pub) {
		return nil, fmt.Errorf("nats nkey seed file %s: not an nkey user seed", path)
	}
	return kp, nil
}

// LoadOrCreateSeedFile returns the public key of the user seed in path, first writing a new seed
// there (mode 0600, atomically) if the file does not exist.
func LoadOrCreateSeedFile(path string) (string, error) {
	kp, err := ReadSeedFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if kp, err = nkeys.CreateUser(); err != nil {
			return "", fmt.Errorf("natsauth: new nkey: %w", err)
		}
		seed, serr := kp.Seed()
		if serr != nil {
			return "", fmt.Errorf("natsauth: new nkey: %w", serr)
		}
		if err = fsutil.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			err = fsutil.WriteFileAtomic(path, append(seed, '\n'), 0o600)
		}
		if err != nil {
			return "", fmt.Errorf("natsauth: write seed %s: %w", path, err)
		}
	}
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// LogOptions make a connection log what the server refuses: a failed (re)connect, such as an
// authorization violation of a wrong or unknown nkey, and permission violations (a publish or
// subscription the identity may not make).
func LogOptions(log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS connect failed; retrying", "error", err.Error())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("NATS server reported an error", "error", err.Error())
		}),
	}
}

// ClientOptions are the connect options of a client authenticating with the nkey seed in seedFile:
// the nkey signature and the user's own inbox prefix (InboxPrefix). A non-empty caFile adds it as the
// CA that verifies the server's TLS certificate. Errors name the file and the flag.
func ClientOptions(seedFile, caFile string) ([]nats.Option, error) {
	var opts []nats.Option
	if seedFile != "" {
		kp, err := ReadSeedFile(seedFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", seedFile, err)
		}
		opts = append(opts, nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(InboxPrefix(pub)))
	}
	if caFile != "" {
		if _, err := os.Stat(caFile); err != nil {
			return nil, fmt.Errorf("--nats-ca: %w", err)
		}
		opts = append(opts, nats.RootCAs(caFile))
	}
	return opts, nil
}
