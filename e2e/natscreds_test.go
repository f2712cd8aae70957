package e2e_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentid/agentid/pkg/natsauth"
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
