package app_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"

	"github.com/agentid/agentid/services/issuer/app"
	"github.com/agentid/agentid/services/issuer/internal/credentials"
)

// rotationClock is the issuer's clock in rotation tests: the real time plus an offset that only the
// test moves, so a NEXT key is activated, and a RETIRING key removed, exactly when the test says.
type rotationClock struct{ offset atomic.Int64 }

func (c *rotationClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// advance moves the clock forward by d.
func (c *rotationClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// rotationConfig keeps the production publish delay and retention (the real time never reaches
// them within a test) and puts the replicas on clock, which the test moves past them; the replicas
// check for due transitions every 50 ms.
func rotationConfig(clock *rotationClock) func(*app.Config) {
	return func(cfg *app.Config) {
		cfg.SigningKeyClock = clock.now
		cfg.SigningKeyCheckInterval = 50 * time.Millisecond
	}
}

// tokenKid returns the kid of a compact JWS.
func tokenKid(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

// keyStates lists tenant's keys on r as kid -> state.
func keyStates(t *testing.T, r *replica, tenant string) map[string]issuerv1.SigningKeyState {
	t.Helper()
	ks, err := r.app.SigningKeys(tenant)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]issuerv1.SigningKeyState{}
	for _, k := range ks {
		out[k.GetKeyId()] = k.GetState()
	}
	return out
}

func TestSigningKeyRotationAcrossTwoReplicas(t *testing.T) {
	n := testkit.StartNATS(t)
	clock := &rotationClock{}
	r1 := startReplicaConfigured(t, n, "", rotationConfig(clock))
	r2 := startReplicaConfigured(t, n, r1.base, rotationConfig(clock)) // one public issuer URL, as behind a load balancer
	c := newTestClient(t, "acme", "agent-rot")
	c.register(t, r1)

	verifier := func(r *replica) *authn.JWKSVerifier {
		v, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: r.base, Audience: agentResource,
			RefreshInterval: time.Second, MinRefreshInterval: time.Second, VerifiedCacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v1 := verifier(r1)
	oldTok := requestToken(t, r1, c).str("access_token")
	oldKid := tokenKid(t, oldTok)
	if _, err := v1.Verify(context.Background(), oldTok); err != nil {
		t.Fatalf("token before the rotation: %v", err)
	}

	// Rotate: the NEXT key is in the JWKS at once and does not sign yet.
	admin := r1.admin(t)
	rot, err := admin.RotateSigningKey(as("acme-admin"), &issuerv1.RotateSigningKeyRequest{Parent: "tenants/acme", RequestId: "rot-1"})
	if err != nil {
		t.Fatal(err)
	}
	next := rot.GetKey()
	if next.GetState() != issuerv1.SigningKeyState_SIGNING_KEY_STATE_NEXT || next.GetKeyId() == oldKid {
		t.Fatalf("rotation returned %v, want a new NEXT key", next)
	}
	if kids := jwksKids(t, r1, "acme"); !slices.Contains(kids, next.GetKeyId()) || !slices.Contains(kids, oldKid) {
		t.Fatalf("JWKS right after the rotation = %v, want the NEXT key %s and the CURRENT %s", kids, next.GetKeyId(), oldKid)
	}
	if kid := tokenKid(t, requestToken(t, r1, c).str("access_token")); kid != oldKid {
		t.Fatalf("token right after the rotation signed by %s, want the CURRENT key %s", kid, oldKid)
	}

	// Bad rotations write nothing.
	again, err := admin.RotateSigningKey(as("acme-admin"), &issuerv1.RotateSigningKeyRequest{Parent: "tenants/acme", RequestId: "rot-1"})
	if err != nil || again.GetKey().GetKeyId() != next.GetKeyId() {
		t.Fatalf("repeated request: %v, %v; want the same NEXT key", again, err)
	}
	for _, tc := range []struct {
		name   string
		caller string
		parent string
		want   codes.Code
	}{
		{"while a NEXT key exists", "acme-admin", "tenants/acme", codes.FailedPrecondition},
		{"auditor", "acme-auditor", "tenants/acme", codes.PermissionDenied},
		{"other tenant's admin", "beta-admin", "tenants/acme", codes.NotFound},
		{"bad parent", "platform-admin", "acme", codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.RotateSigningKey(as(tc.caller), &issuerv1.RotateSigningKeyRequest{Parent: tc.parent, RequestId: "rot-2"})
			if status.Code(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	wantBefore := map[string]issuerv1.SigningKeyState{next.GetKeyId(): issuerv1.SigningKeyState_SIGNING_KEY_STATE_NEXT, oldKid: issuerv1.SigningKeyState_SIGNING_KEY_STATE_CURRENT}
	for _, r := range []*replica{r1, r2} {
		if got := keyStates(t, r, "acme"); !maps.Equal(got, wantBefore) {
			t.Fatalf("states before the publish delay = %v, want %v", got, wantBefore)
		}
	}

	// After the publish delay both replicas sign with the new key; the old one is RETIRING and its
	// tokens still verify.
	clock.advance(credentials.DefaultPublishDelay)
	for _, r := range []*replica{r1, r2} {
		eventually(t, "tokens signed by the new key", func() bool {
			return tokenKid(t, requestToken(t, r, c).str("access_token")) == next.GetKeyId()
		})
	}
	want := map[string]issuerv1.SigningKeyState{next.GetKeyId(): issuerv1.SigningKeyState_SIGNING_KEY_STATE_CURRENT, oldKid: issuerv1.SigningKeyState_SIGNING_KEY_STATE_RETIRING}
	for _, r := range []*replica{r1, r2} {
		if got := keyStates(t, r, "acme"); !maps.Equal(got, want) {
			t.Fatalf("states after the publish delay = %v, want %v", got, want)
		}
	}
	// v1 fetched the JWKS before the rotation; the clock moved the publish delay but the real time did
	// not, so v1 learns the new key by its refetch on an unknown kid (at most once a second).
	newTok := requestToken(t, r2, c).str("access_token")
	eventually(t, "the verifier accepting the new key's token", func() bool {
		_, err := v1.Verify(context.Background(), newTok)
		return err == nil
	})
	if _, err := v1.Verify(context.Background(), oldTok); err != nil {
		t.Fatalf("token of the RETIRING key: %v", err)
	}

	// After the retention the old key leaves every replica's JWKS; its tokens are refused for it.
	clock.advance(credentials.DefaultRetention)
	for _, r := range []*replica{r1, r2} {
		eventually(t, "the old key removed", func() bool {
			return keyStates(t, r, "acme")[oldKid] == issuerv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED
		})
		if kids := jwksKids(t, r, "acme"); slices.Contains(kids, oldKid) || !slices.Contains(kids, next.GetKeyId()) {
			t.Fatalf("JWKS after the removal = %v, want %s without %s", kids, next.GetKeyId(), oldKid)
		}
	}
	_, err = verifier(r1).Verify(context.Background(), oldTok)
	if e := (*errs.Error)(nil); !errors.As(err, &e) || e.Reason != authn.ReasonTokenKeyUnknown {
		t.Fatalf("old token after the removal: %v, want %s", err, authn.ReasonTokenKeyUnknown)
	}
	if _, err := verifier(r1).Verify(context.Background(), newTok); err != nil {
		t.Fatalf("token of the new key after the removal: %v", err)
	}
}

// startReplicaConfigured starts a ready replica on n with configure applied; publicURL "" is its own.
func startReplicaConfigured(t *testing.T, n *testkit.NATS, publicURL string, configure func(*app.Config)) *replica {
	t.Helper()
	r := launchReplicaWith(t, n, publicURL, configure)
	r.waitReady(t)
	return r
}

// issuerProcess is an issuer that a test stops, with the error its tasks ended with.
type issuerProcess struct {
	*replica
	stop func()
	errs chan error
}

// runIssuer starts an issuer on n with cfg (PublicURL set to its own server) that the test stops.
func runIssuer(t *testing.T, n *testkit.NATS, cfg app.Config) *issuerProcess {
	t.Helper()
	logger := testLogger(t)
	store := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(logger))
	var mu sync.Mutex
	var handler http.Handler = http.NotFoundHandler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := handler
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	cfg.PublicURL = srv.URL
	a, err := app.New(cfg, app.Deps{Store: store, Logger: logger, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	handler = a.HTTPHandler()
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	p := &issuerProcess{replica: &replica{app: a, srv: srv, store: store, base: srv.URL}, errs: make(chan error, len(a.Tasks()))}
	var wg sync.WaitGroup
	for _, task := range a.Tasks() {
		wg.Go(func() {
			if err := task(ctx); err != nil {
				p.errs <- err
				cancel() // the process ends on a task's error, as service.Run does
			}
		})
	}
	var once sync.Once
	p.stop = func() { once.Do(func() { cancel(); wg.Wait(); srv.Close() }) }
	t.Cleanup(p.stop)
	return p
}

func TestResealUnderNewKEKThenStartWithOnlyIt(t *testing.T) {
	n := testkit.StartNATS(t)
	kek1, kek2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ctx := context.Background()

	// Under KEK 1: the system tenant's key, acme's key and acme's NEXT key.
	p1 := runIssuer(t, n, app.Config{KEK: kek1, KEKID: "kek-1"})
	p1.waitReady(t)
	if err := p1.app.EnsureSigningKey(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := p1.app.RotateSigningKey(ctx, "acme", "r1"); err != nil {
		t.Fatal(err)
	}
	p1.stop()

	// KEK 2 current, KEK 1 old: everything opens; the re-seal moves the three keys under KEK 2.
	p2 := runIssuer(t, n, app.Config{KEK: kek2, KEKID: "kek-2", OldKEKs: []app.OldKEK{{ID: "kek-1", Key: kek1}}})
	p2.waitReady(t)
	admin := p2.admin(t)
	if _, err := admin.ResealSigningKeys(as("acme-admin"), &issuerv1.ResealSigningKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("re-seal by a tenant-admin: %v, want PermissionDenied", err)
	}
	first, err := admin.ResealSigningKeys(as("platform-admin"), &issuerv1.ResealSigningKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantUsage := []*issuerv1.KEKUsage{{KekId: "kek-2", Keys: 3}}
	if first.GetResealed() != 3 || first.GetUnchanged() != 0 || !sameUsage(first.GetKeks(), wantUsage) {
		t.Fatalf("first re-seal = %v, want 3 re-sealed, all 3 under kek-2", first)
	}
	second, err := admin.ResealSigningKeys(as("platform-admin"), &issuerv1.ResealSigningKeysRequest{Parent: "tenants/acme"})
	if err != nil || second.GetResealed() != 0 || second.GetUnchanged() != 2 {
		t.Fatalf("repeated re-seal of acme = %v, %v; want nothing re-sealed, 2 unchanged", second, err)
	}
	p2.stop()

	// Only KEK 2: starts and signs with the re-sealed keys.
	p3 := runIssuer(t, n, app.Config{KEK: kek2, KEKID: "kek-2"})
	p3.waitReady(t)
	ks, err := p3.app.SigningKeys("acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if k.GetKekId() != "kek-2" {
			t.Fatalf("key %s sealed with %s after the re-seal", k.GetKeyId(), k.GetKekId())
		}
	}
	c := newTestClient(t, "acme", "agent-kek")
	c.register(t, p3.replica)
	requestToken(t, p3.replica, c)
	p3.stop()

	// Only KEK 1: the keys in use are sealed with KEK 2; the start fails closed, naming it.
	p4 := runIssuer(t, n, app.Config{KEK: kek1, KEKID: "kek-1"})
	select {
	case err := <-p4.errs:
		if !strings.Contains(err.Error(), `"kek-2"`) || !strings.Contains(err.Error(), "cannot start") {
			t.Fatalf("start with only the old KEK: %v, want an error naming kek-2", err)
		}
	case <-time.After(testkit.DefaultWait):
		t.Fatal("an issuer with only the old KEK did not fail")
	}
	resp, err := http.Get(p4.srv.URL + "/t/acme/jwks.json")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("an issuer that cannot open its keys served the JWKS: %s", body)
		}
	}
}

func sameUsage(got, want []*issuerv1.KEKUsage) bool {
	return slices.EqualFunc(got, want, func(a, b *issuerv1.KEKUsage) bool {
		return a.GetKekId() == b.GetKekId() && a.GetKeys() == b.GetKeys()
	})
}
