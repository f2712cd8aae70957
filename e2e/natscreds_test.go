package e2e_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
)

// devNATSCredentials maps the NATS URL of a running `agentid dev` to the directory of the nkey seeds
// it generated: its embedded server refuses anonymous clients.
var devNATSCredentials sync.Map

// rememberDevNATS records where the credentials of p's embedded NATS server are.
func rememberDevNATS(p *platform) *platform {
	devNATSCredentials.Store(p.NATSURL, filepath.Join(p.DataDir, "credentials", "nats"))
	return p
}

// devNATSSeed is the seed file of identity id for the NATS server at url, "" when url is not the
// embedded server of an `agentid dev` (an external server without credentials).
func devNATSSeed(url string, id natsauth.Identity) string {
	dir, ok := devNATSCredentials.Load(url)
	if !ok {
		return ""
	}
	p := natsauth.SeedPath(dir.(string), string(id))
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// natsOptions are the connect options of identity id on the NATS server at url.
func natsOptions(t testing.TB, url string, id natsauth.Identity) []nats.Option {
	t.Helper()
	opts, err := natsauth.ClientOptions(devNATSSeed(url, id), "")
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// TestDevNATSRefusesAnonymousClients: the embedded NATS server of `agentid dev` refuses a client
// without an identity; the seeds it generated are private to their owner (mode 0600) and the banner
// says where they are; with one of them a client connects and is held to that identity's rights.
func TestDevNATSRefusesAnonymousClients(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	dataDir := t.TempDir()
	p := startPlatform(t, agentidBin, dataDir)

	nc, err := nats.Connect(p.NATSURL, nats.Name("anonymous"), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to agentid dev's NATS server")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("anonymous connect: %v, want an authorization violation", err)
	}

	dir := filepath.Join(dataDir, "credentials", "nats")
	if !strings.Contains(p.Output(), dir) {
		t.Errorf("the banner does not say where the NATS credentials are (%s):\n%s", dir, p.Output())
	}
	for _, id := range natsauth.PlatformIdentities {
		fi, err := os.Stat(natsauth.SeedPath(dir, string(id)))
		if err != nil {
			t.Fatalf("seed of %s: %v", id, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("seed of %s has mode %v, want 0600", id, fi.Mode().Perm())
		}
	}

	var violations atomic.Int32
	nc, err = nats.Connect(p.NATSURL, append(natsOptions(t, p.NATSURL, natsauth.Verifier), nats.Name("verifier"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations.Add(1)
			}
		}))...)
	if err != nil {
		t.Fatalf("connect as the verifier: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
	defer cancel()
	if _, err := js.Stream(ctx, eventstore.StreamRevocations); err != nil {
		t.Fatalf("the verifier reads REVOCATIONS: %v", err)
	}
	if err := nc.Publish("agentid.default.client.evil.created", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the server to refuse the verifier's publish", func() (bool, error) {
		return violations.Load() > 0, nc.Flush()
	})
}
