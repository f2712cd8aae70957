package rotationload

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/pkg/grpcx"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

// pollInterval is how often the signing keys' states are read during the run.
const pollInterval = 200 * time.Millisecond

// Run creates the clients, runs the load across the rotation and returns the report. Progress lines
// go to progress. A report is returned whenever the load ran; err is set when the run could not
// start, or when UntilRemoved was asked and the old key was not removed within Duration.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	admin, err := authn.LoadCredentialFile(tokenload.AdminCredentialPath(cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	issuer, err := tokenload.TenantIssuer(admin.Issuer, cfg.Tenant)
	if err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential: %w", err)
	}
	if err := tokenload.CheckLoopbackURL(issuer); err != nil {
		return nil, fmt.Errorf("--data-dir: admin credential issuer: %w", err)
	}
	if strings.HasPrefix(issuer, "https://") {
		return nil, fmt.Errorf("--data-dir: the platform serves TLS (%s): rotationload speaks plaintext only", issuer)
	}
	base := issuer[:strings.LastIndex(issuer, "/t/")]
	httpClient := tokenclient.NewHTTPClient(cfg.Concurrency+2, 30*time.Second)
	adminCtx := context.WithValue(ctx, oauth2.HTTPClient, httpClient)
	conn, err := grpcx.DialTLS(cfg.Server, nil, authn.PerRPCCredentials(admin.TokenSource(adminCtx), false))
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	defer func() { _ = conn.Close() }()
	api := issuerv1.NewIssuerServiceClient(conn)
	parent := "tenants/" + cfg.Tenant

	before, err := api.ListSigningKeys(ctx, &issuerv1.ListSigningKeysRequest{Parent: parent})
	if err != nil {
		return nil, fmt.Errorf("list the signing keys of tenant %s: %w", cfg.Tenant, err)
	}
	oldKid := ""
	for _, k := range before.GetKeys() {
		switch k.GetState() {
		case issuerv1.SigningKeyState_SIGNING_KEY_STATE_NEXT:
			return nil, fmt.Errorf("tenant %s already has a NEXT signing key %s (a rotation in progress): wait until it is CURRENT", cfg.Tenant, k.GetKeyId())
		case issuerv1.SigningKeyState_SIGNING_KEY_STATE_CURRENT, issuerv1.SigningKeyState_SIGNING_KEY_STATE_UNSPECIFIED:
			oldKid = k.GetKeyId()
		}
	}
	if oldKid == "" {
		return nil, fmt.Errorf("tenant %s has no CURRENT signing key", cfg.Tenant)
	}

	label := randomHex(4)
	fmt.Fprintf(progress, "creating %d clients in tenant %s (token lifetime %s)...\n", cfg.Clients, cfg.Tenant, cfg.TokenTTL)
	ids := make([]*tokenclient.Identity, cfg.Clients)
	for i := range ids {
		if ids[i], err = createClient(ctx, api, parent, fmt.Sprintf("rotload-%s-%d", label, i), cfg); err != nil {
			return nil, err
		}
	}
	verifier, err := authn.NewJWKSVerifier(authn.JWKSVerifierConfig{IssuerBaseURL: base, Audience: cfg.Resource,
		HTTPClient: httpClient, RefreshInterval: cfg.JWKSRefresh, MinRefreshInterval: min(cfg.JWKSRefresh, 5*time.Second),
		Tenants: []string{cfg.Tenant}})
	if err != nil {
		return nil, err
	}
	client := &tokenclient.Client{HTTP: httpClient, TokenURL: issuer + "/oauth2/token", Audience: issuer, Resource: cfg.Resource}

	rep := &Report{
		Target: Target{Server: cfg.Server, Issuer: issuer, Tenant: cfg.Tenant},
		Settings: Settings{Clients: cfg.Clients, Concurrency: cfg.Concurrency, DurationSeconds: cfg.Duration.Seconds(),
			RotateAfterSeconds: cfg.RotateAfter.Seconds(), TokenTTLSeconds: cfg.TokenTTL.Seconds(),
			JWKSRefreshSeconds: cfg.JWKSRefresh.Seconds(), UntilRemoved: cfg.UntilRemoved},
		OldKid: oldKid, FailureCodes: map[string]int64{}, VerificationReasons: map[string]int64{}, TokensPerKid: map[string]int64{},
	}
	fmt.Fprintf(progress, "load started (concurrency %d); rotating the signing key of %s (CURRENT %s) in %s...\n",
		cfg.Concurrency, cfg.Tenant, oldKid, cfg.RotateAfter)

	r := &runner{cfg: cfg, verifier: verifier, client: client, ids: ids, rep: rep}
	start := time.Now()
	loadCtx, stopLoad := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer stopLoad()
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() { r.work(loadCtx) })
	}
	wg.Go(func() { r.reverifyDue(loadCtx) })
	removed, runErr := r.rotate(loadCtx, api, parent, start, progress)
	stopLoad()
	wg.Wait()
	r.reverifyAll(ctx)
	rep.ElapsedSeconds = time.Since(start).Seconds()
	rep.Requests, rep.OK, rep.Verified, rep.Reverified = r.requests.Load(), r.ok.Load(), r.verified.Load(), r.reverified.Load()
	rep.Failures, rep.VerificationFailures = r.failures.Load(), r.verifyFailures.Load()

	if keys, err := fetchJWKS(ctx, httpClient, issuer+"/jwks.json"); err == nil {
		rep.JWKSAtEnd = keys
		for _, k := range keys {
			rep.OldKidInJWKS = rep.OldKidInJWKS || k == oldKid
			rep.NewKidInJWKS = rep.NewKidInJWKS || k == rep.NewKid
		}
	} else {
		runErr = errors.Join(runErr, fmt.Errorf("read the JWKS at the end: %w", err))
	}
	if cfg.UntilRemoved && !removed && runErr == nil {
		runErr = fmt.Errorf("the old signing key %s was not removed within --duration %s (is agentid dev's --signing-key-retention shorter than that?)", oldKid, cfg.Duration)
	}
	return rep, runErr
}

// createClient registers one OAuth client for the run with a fresh key and returns its identity.
func createClient(ctx context.Context, api issuerv1.IssuerServiceClient, parent, clientID string, cfg Config) (*tokenclient.Identity, error) {
	id, err := tokenclient.NewIdentity()
	if err != nil {
		return nil, err
	}
	jwks, err := id.PublicJWKS()
	if err != nil {
		return nil, err
	}
	_, err = api.CreateClient(ctx, &issuerv1.CreateClientRequest{Parent: parent, RequestId: "create-" + clientID, Client: &issuerv1.Client{
		ClientId: clientID, PublicJwks: jwks, Resources: []string{cfg.Resource}, TokenTtlSeconds: int32(cfg.TokenTTL / time.Second),
	}})
	if err != nil {
		return nil, fmt.Errorf("create client %s: %w", clientID, err)
	}
	id.ClientID = clientID
	return id, nil
}

// runner is the state of one run shared by its goroutines.
type runner struct {
	cfg      Config
	verifier *authn.JWKSVerifier
	client   *tokenclient.Client
	ids      []*tokenclient.Identity
	rep      *Report

	next                                 atomic.Int64
	requests, ok, failures               atomic.Int64
	verified, reverified, verifyFailures atomic.Int64

	mu      sync.Mutex // guards rep's maps and pending
	pending tokenHeap
}

// work requests tokens back to back until ctx ends, verifying each one at once.
func (r *runner) work(ctx context.Context) {
	for ctx.Err() == nil {
		id := r.ids[int(r.next.Add(1)-1)%len(r.ids)]
		tok, err := r.client.Request(ctx, id)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return
		}
		r.requests.Add(1)
		if err != nil {
			r.failures.Add(1)
			r.count(r.rep.FailureCodes, tokenclient.Code(err))
			continue
		}
		r.ok.Add(1)
		kid := kidOf(tok.AccessToken)
		r.count(r.rep.TokensPerKid, kid)
		claims, err := r.verifier.Verify(ctx, tok.AccessToken)
		if err != nil && ctx.Err() != nil {
			// Cut short by the end of the run: verified at the end instead.
			claims, err = r.verifier.Verify(context.Background(), tok.AccessToken)
		}
		if err != nil {
			r.verifyFailed("issued", kid, err)
			continue
		}
		r.verified.Add(1)
		r.mu.Lock()
		heap.Push(&r.pending, pendingToken{raw: tok.AccessToken, kid: kid, due: claims.Expiry.Add(-ReverifyMargin)})
		r.mu.Unlock()
	}
}

// reverifyDue verifies each token again when it is about to expire, until ctx ends.
func (r *runner) reverifyDue(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for {
				r.mu.Lock()
				if r.pending.Len() == 0 || r.pending[0].due.After(now) {
					r.mu.Unlock()
					break
				}
				p := heap.Pop(&r.pending).(pendingToken)
				r.mu.Unlock()
				r.reverify(context.WithoutCancel(ctx), p)
			}
		}
	}
}

// reverifyAll verifies every token not verified a second time yet (the end of the run).
func (r *runner) reverifyAll(ctx context.Context) {
	r.mu.Lock()
	rest := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, p := range rest {
		r.reverify(ctx, p)
	}
}

func (r *runner) reverify(ctx context.Context, p pendingToken) {
	if _, err := r.verifier.Verify(ctx, p.raw); err != nil {
		r.verifyFailed("before expiry", p.kid, err)
		return
	}
	r.reverified.Add(1)
}

// verifyFailed counts a refused token by when and why it was refused.
func (r *runner) verifyFailed(when, kid string, err error) {
	r.verifyFailures.Add(1)
	reason := "UNKNOWN"
	var e *errs.Error
	if errors.As(err, &e) {
		reason = e.Reason
	}
	r.count(r.rep.VerificationReasons, when+": "+reason+" (kid "+kid+")")
}

func (r *runner) count(m map[string]int64, key string) {
	r.mu.Lock()
	m[key]++
	r.mu.Unlock()
}

// rotate calls RotateSigningKey RotateAfter after start, then follows the keys' states until the
// old key is removed (with UntilRemoved: then it ends the run) or ctx ends. It reports whether the
// removal was seen.
func (r *runner) rotate(ctx context.Context, api issuerv1.IssuerServiceClient, parent string, start time.Time, progress io.Writer) (bool, error) {
	select {
	case <-ctx.Done():
		return false, fmt.Errorf("the run ended before the rotation (--rotate-after %s)", r.cfg.RotateAfter)
	case <-time.After(time.Until(start.Add(r.cfg.RotateAfter))):
	}
	resp, err := api.RotateSigningKey(ctx, &issuerv1.RotateSigningKeyRequest{Parent: parent, RequestId: "rotationload-" + randomHex(8)})
	if err != nil {
		return false, fmt.Errorf("RotateSigningKey: %w", err)
	}
	rot := &r.rep.Rotation
	r.rep.NewKid = resp.GetKey().GetKeyId()
	rot.RotatedAtSeconds = time.Since(start).Seconds()
	fmt.Fprintf(progress, "%6.1fs rotated: NEXT key %s\n", rot.RotatedAtSeconds, r.rep.NewKid)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rot.RemovedAtSeconds > 0, nil
		case <-t.C:
		}
		list, err := api.ListSigningKeys(ctx, &issuerv1.ListSigningKeysRequest{Parent: parent})
		if err != nil {
			if ctx.Err() != nil {
				return rot.RemovedAtSeconds > 0, nil
			}
			return false, fmt.Errorf("ListSigningKeys: %w", err)
		}
		for _, k := range list.GetKeys() {
			switch {
			case k.GetKeyId() == r.rep.NewKid && k.GetState() == issuerv1.SigningKeyState_SIGNING_KEY_STATE_CURRENT && rot.ActivatedAtSeconds == 0:
				rot.ActivatedAtSeconds = time.Since(start).Seconds()
				rot.PublishDelaySeconds = k.GetActivateTime().AsTime().Sub(k.GetCreateTime().AsTime()).Seconds()
				fmt.Fprintf(progress, "%6.1fs activated: %s is CURRENT, %s RETIRING\n", rot.ActivatedAtSeconds, r.rep.NewKid, r.rep.OldKid)
			case k.GetKeyId() == r.rep.OldKid && k.GetState() == issuerv1.SigningKeyState_SIGNING_KEY_STATE_RETIRED && rot.RemovedAtSeconds == 0:
				rot.RemovedAtSeconds = time.Since(start).Seconds()
				rot.RetentionSeconds = k.GetRemoveTime().AsTime().Sub(k.GetRetireTime().AsTime()).Seconds()
				fmt.Fprintf(progress, "%6.1fs removed: %s left the JWKS\n", rot.RemovedAtSeconds, r.rep.OldKid)
			}
		}
		if rot.RemovedAtSeconds > 0 && r.cfg.UntilRemoved {
			return true, nil
		}
	}
}

// pendingToken is a verified token waiting for its second verification.
type pendingToken struct {
	raw, kid string
	due      time.Time
}

// tokenHeap orders pending tokens by due time (container/heap).
type tokenHeap []pendingToken

func (h tokenHeap) Len() int           { return len(h) }
func (h tokenHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h tokenHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tokenHeap) Push(x any)        { *h = append(*h, x.(pendingToken)) }
func (h *tokenHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// kidOf returns the kid in a JWT's header, or "?" when it has none.
func kidOf(raw string) string {
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		Kid string `json:"kid"`
	}
	if err != nil || json.Unmarshal(b, &h) != nil || h.Kid == "" {
		return "?"
	}
	return h.Kid
}

// fetchJWKS returns the key ids of the JWK Set at url.
func fetchJWKS(ctx context.Context, c *http.Client, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	out := make([]string, len(set.Keys))
	for i, k := range set.Keys {
		out[i] = k.Kid
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Main is the rotationload command: it parses args, runs and prints the report to stdout. It returns
// 0 after a run with no failed request and no failed verification, 1 otherwise (the report is
// printed whenever the load ran), 2 for bad flags.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "rotationload:", err)
		return 2
	}
	rep, err := Run(ctx, cfg, stderr)
	code := 0
	if err != nil {
		fmt.Fprintln(stderr, "rotationload:", err)
		code = 1
	}
	if rep == nil {
		return 1
	}
	if cfg.Output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "rotationload:", err)
		return 1
	}
	if rep.Failures > 0 || rep.VerificationFailures > 0 {
		fmt.Fprintf(stderr, "rotationload: %d failed requests, %d failed verifications\n", rep.Failures, rep.VerificationFailures)
		code = 1
	}
	return code
}
