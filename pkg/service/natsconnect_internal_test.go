package service

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/natsauth"
)

// TestConnectNATSRefusedIdentityFailsAtStart: a server that refuses the service's identity fails the
// start with an error naming --nats-nkey and its file; its own identity connects; an unreachable
// server is retried in the background instead.
func TestConnectNATSRefusedIdentityFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	users, err := natsauth.LoadOrCreateUsers(filepath.Join(dir, "seeds"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := eventstore.RunEmbeddedServer(eventstore.EmbeddedConfig{Host: "127.0.0.1", StoreDir: filepath.Join(dir, "js"), NkeyUsers: natsauth.NkeyUsers(users)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := "nats://127.0.0.1:" + strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
	stranger := filepath.Join(dir, "stranger.nk")
	if _, err := natsauth.LoadOrCreateSeedFile(stranger); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	_ = l.Close()

	tests := []struct {
		name      string
		url, seed string
		wantErr   []string // substrings of the error; none: connects (or keeps trying)
	}{
		{name: "its own identity", url: url, seed: natsauth.SeedPath(filepath.Join(dir, "seeds"), string(natsauth.Registry))},
		{name: "an unknown identity", url: url, seed: stranger, wantErr: []string{"--nats-nkey", stranger, "refused"}},
		{name: "no identity", url: url, wantErr: []string{"--nats-nkey is not set", "refused"}},
		{name: "NATS not reachable yet", url: closed, seed: stranger},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Flags{NATSURL: tt.url, NATSNkey: tt.seed}
			opts, err := natsauth.ClientOptions(tt.seed, "")
			if err != nil {
				t.Fatal(err)
			}
			nc, err := connectNATS(f, append(opts, nats.MaxReconnects(-1)))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("connectNATS: %v", err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected, want the start to fail")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
