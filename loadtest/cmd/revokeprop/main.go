// Command revokeprop measures revocation propagation against a running `agentid dev`: it starts N
// verifier processes (offline JWKS verification with the push denylist fed from the REVOCATIONS
// stream), gets access tokens, and for each revocation measures the time from the revoke call's
// response until every verifier refuses the token (each polled in a tight loop). See
// docs/revocation.md.
//
//	revokeprop -data-dir .agentid -revocations 1000 -verifiers 3
//
// `revokeprop verifier ...` is the verifier process it starts (one binary, so nothing else to build).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
	"github.com/agentid/agentid/loadtest/internal/tokenload"
	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/grpcx"
	"github.com/agentid/agentid/pkg/natsauth"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if len(os.Args) > 1 && os.Args[1] == "verifier" {
		code = verifierMain(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// config is what a measurement runs with.
type config struct {
	dataDir     string
	server      string
	natsURL     string
	natsNkey    string
	tenant      string
	verifiers   int
	revocations int
	method      string
	timeout     time.Duration
	output      string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{}
	fs := flag.NewFlagSet("revokeprop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.dataDir, "data-dir", ".agentid", "agentid dev data directory (reads credentials/bootstrap-admin.json)")
	fs.StringVar(&c.server, "server", "127.0.0.1:7070", "gRPC address of the platform (loopback only)")
	fs.StringVar(&c.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server of the platform, for the verifiers")
	fs.StringVar(&c.natsNkey, "nats-nkey", "", "nkey seed file of the NATS verifier identity, for the verifiers (default <data-dir>/credentials/nats/verifier.nk when it exists)")
	fs.StringVar(&c.tenant, "tenant", "default", "tenant whose tokens are revoked")
	fs.IntVar(&c.verifiers, "verifiers", 3, "verifier processes")
	fs.IntVar(&c.revocations, "revocations", 1000, "revocations to measure")
	fs.StringVar(&c.method, "method", "api", "how to revoke: api (IssuerService.RevokeTokens by token) or rfc7009 (the client at /oauth2/revoke)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "longest wait for every verifier to refuse one revoked token")
	fs.StringVar(&c.output, "o", "text", "report format: text or json")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.verifiers < 1 || c.verifiers > 32:
		return c, fmt.Errorf("-verifiers %d: want 1 to 32", c.verifiers)
	case c.revocations < 1:
		return c, fmt.Errorf("-revocations %d: want at least 1", c.revocations)
	case c.method != "api" && c.method != "rfc7009":
		return c, fmt.Errorf("-method %q: want api or rfc7009", c.method)
	case c.output != "text" && c.output != "json":
		return c, fmt.Errorf("-o %q: want text or json", c.output)
	case c.timeout <= 0:
		return c, fmt.Errorf("-timeout %s: want a positive duration", c.timeout)
	}
	if err := tokenload.CheckLoopbackAddr(c.server); err != nil {
		return c, fmt.Errorf("-server: %w", err)
	}
	return c, nil
}

// report is the measurement's result.
type report struct {
	Verifiers   int    `json:"verifiers"`
	Revocations int    `json:"revocations"`
	Method      string `json:"method"`
	CPUs        int    `json:"cpus"`
	// AllRefuse is from the revoke call's response until every verifier refuses the token.
	AllRefuse stats.Summary `json:"all_refuse"`
	// FirstRefuses is from the response until the first verifier refuses it.
	FirstRefuses stats.Summary `json:"first_refuses"`
	// RevokeCall is the revoke call's own latency (request to response).
	RevokeCall stats.Summary `json:"revoke_call"`
	// TimedOut counts revocations not refused by every verifier within the timeout.
	TimedOut int `json:"timed_out"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "revokeprop: %v\n", err)
		return 2
	}
	rep, err := measure(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "revokeprop: %v\n", err)
		return 1
	}
	if cfg.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		fmt.Fprintf(stdout, "revocation propagation: %d revocations (%s), %d verifier processes, %d CPUs\n",
			rep.Revocations, rep.Method, rep.Verifiers, rep.CPUs)
		fmt.Fprintf(stdout, "  all verifiers refuse  %s\n", line(rep.AllRefuse))
		fmt.Fprintf(stdout, "  first verifier        %s\n", line(rep.FirstRefuses))
		fmt.Fprintf(stdout, "  revoke call           %s\n", line(rep.RevokeCall))
		fmt.Fprintf(stdout, "  timed out             %d\n", rep.TimedOut)
	}
	if rep.TimedOut > 0 {
		return 1
	}
	return 0
}

func line(s stats.Summary) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)",
		stats.Format(s.P50), stats.Format(s.P90), stats.Format(s.P99), stats.Format(s.Max), s.Count)
}

func measure(ctx context.Context, cfg config, progress io.Writer) (*report, error) {
	admin, err := authn.LoadCredentialFile(tokenload.AdminCredentialPath(cfg.dataDir))
	if err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	issuer, err := tokenload.TenantIssuer(admin.Issuer, cfg.tenant)
	if err != nil {
		return nil, err
	}
	if err := tokenload.CheckLoopbackURL(issuer); err != nil {
		return nil, fmt.Errorf("admin credential issuer: %w", err)
	}
	base, _ := strings.CutSuffix(issuer, "/t/"+cfg.tenant)
	conn, err := grpcx.Dial(cfg.server, authn.PerRPCCredentials(admin.TokenSource(ctx), false))
	if err != nil {
		return nil, fmt.Errorf("-server: %w", err)
	}
	defer func() { _ = conn.Close() }()
	issuerAPI := issuerv1.NewIssuerServiceClient(conn)

	// The client whose tokens are revoked.
	id, err := tokenclient.NewIdentity()
	if err != nil {
		return nil, err
	}
	id.ClientID = "revokeprop-" + randomID()[:8]
	jwks, err := id.PublicJWKS()
	if err != nil {
		return nil, err
	}
	if _, err := issuerAPI.CreateClient(ctx, &issuerv1.CreateClientRequest{
		Parent: "tenants/" + cfg.tenant, RequestId: id.ClientID,
		Client: &issuerv1.Client{ClientId: id.ClientID, PublicJwks: jwks, Roles: []string{"auditor"}},
	}); err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	hc := tokenclient.NewHTTPClient(cfg.verifiers*2+4, 30*time.Second)
	tokens := &tokenclient.Client{HTTP: hc, TokenURL: issuer + "/oauth2/token", Audience: issuer}

	vs, err := startVerifiers(ctx, cfg, base, progress)
	if err != nil {
		return nil, err
	}
	defer vs.stop()

	all, first, call := stats.NewHistogram(), stats.NewHistogram(), stats.NewHistogram()
	rep := &report{Verifiers: cfg.verifiers, Revocations: cfg.revocations, Method: cfg.method, CPUs: runtime.NumCPU()}
	fmt.Fprintf(progress, "measuring %d revocations with %d verifiers...\n", cfg.revocations, cfg.verifiers)
	for i := range cfg.revocations {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		tok, err := requestToken(ctx, tokens, id)
		if err != nil {
			return nil, fmt.Errorf("token %d: %w", i, err)
		}
		// Every verifier accepts it first (and has the tenant's keys).
		if err := vs.waitAll(ctx, tok, http.StatusNoContent, cfg.timeout); err != nil {
			return nil, fmt.Errorf("token %d not accepted by every verifier: %w", i, err)
		}
		sent := time.Now()
		if err := revoke(ctx, cfg.method, issuerAPI, hc, issuer, tokens, id, cfg.tenant, tok); err != nil {
			return nil, fmt.Errorf("revoke %d: %w", i, err)
		}
		answered := time.Now()
		call.Record(answered.Sub(sent))
		times, err := vs.refusedAt(ctx, tok, cfg.timeout)
		if err != nil {
			rep.TimedOut++
			fmt.Fprintf(progress, "revocation %d: %v\n", i, err)
			continue
		}
		lo, hi := times[0], times[0]
		for _, t := range times[1:] {
			lo, hi = minTime(lo, t), maxTime(hi, t)
		}
		all.Record(max(hi.Sub(answered), 0))
		first.Record(max(lo.Sub(answered), 0))
		if (i+1)%100 == 0 {
			fmt.Fprintf(progress, "  %d/%d (p99 so far %s)\n", i+1, cfg.revocations, all.Quantile(0.99).Round(10*time.Microsecond))
		}
	}
	rep.AllRefuse, rep.FirstRefuses, rep.RevokeCall = all.Summary(), first.Summary(), call.Summary()
	return rep, nil
}

// randomID is 32 random hex digits.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// requestToken gets a token, retrying briefly while the new client is not yet known to the issuer.
func requestToken(ctx context.Context, c *tokenclient.Client, id *tokenclient.Identity) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		tok, err := c.Request(ctx, id)
		if err == nil {
			return tok.AccessToken, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// revoke revokes token through the admin API or the client's RFC 7009 endpoint.
func revoke(ctx context.Context, method string, api issuerv1.IssuerServiceClient, hc *http.Client, issuer string,
	tokens *tokenclient.Client, id *tokenclient.Identity, tenant, token string) error {
	if method == "api" {
		res, err := api.RevokeTokens(ctx, &issuerv1.RevokeTokensRequest{
			Parent: "tenants/" + tenant, Target: &issuerv1.RevokeTokensRequest_Token{Token: token},
			Reason: "revokeprop", RequestId: randomID(),
		})
		if err != nil {
			return err
		}
		if res.GetRevocation().GetName() == "" {
			return errors.New("RevokeTokens revoked nothing")
		}
		return nil
	}
	assertion, err := id.Assertion(tokens.Audience, time.Now())
	if err != nil {
		return err
	}
	form := url.Values{
		"token": {token}, "token_type_hint": {"access_token"}, "client_id": {id.ClientID},
		"client_assertion_type": {authn.ClientAssertionType}, "client_assertion": {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuer+"/oauth2/revoke", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /oauth2/revoke: %s", resp.Status)
	}
	return nil
}

// verifiers are the running verifier processes.
type verifiers struct {
	cmds  []*exec.Cmd
	addrs []string
	http  *http.Client
}

// startVerifiers starts cfg.verifiers processes of this binary and waits until each is ready.
func startVerifiers(ctx context.Context, cfg config, issuerBase string, progress io.Writer) (*verifiers, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	vs := &verifiers{http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, Proxy: nil}, Timeout: 5 * time.Second}}
	for i := range cfg.verifiers {
		seed := cfg.natsNkey
		if dev := natsauth.SeedPath(filepath.Join(cfg.dataDir, "credentials", "nats"), string(natsauth.Verifier)); seed == "" {
			if _, err := os.Stat(dev); err == nil {
				seed = dev // agentid dev's verifier identity
			}
		}
		cmd := exec.Command(self, "verifier", "-nats-url", cfg.natsURL, "-nats-nkey", seed, "-issuer-url", issuerBase)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			vs.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			vs.stop()
			return nil, fmt.Errorf("start verifier %d: %w", i, err)
		}
		vs.cmds = append(vs.cmds, cmd)
		addr, err := waitVerifier(ctx, out, 60*time.Second)
		if err != nil {
			vs.stop()
			return nil, fmt.Errorf("verifier %d: %w", i, err)
		}
		vs.addrs = append(vs.addrs, addr)
		fmt.Fprintf(progress, "verifier %d (pid %d) ready on %s\n", i, cmd.Process.Pid, addr)
	}
	return vs, nil
}

// waitVerifier reads a verifier's stdout until it has said where it listens and that it is ready.
func waitVerifier(ctx context.Context, out io.Reader, timeout time.Duration) (string, error) {
	type result struct {
		addr string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var addr string
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr = a
			}
			if sc.Text() == "ready" {
				done <- result{addr: addr}
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
		done <- result{err: errors.New("exited before it was ready")}
	}()
	select {
	case r := <-done:
		return r.addr, r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("not ready within %s", timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (vs *verifiers) stop() {
	for _, c := range vs.cmds {
		_ = c.Process.Signal(os.Interrupt)
	}
	for _, c := range vs.cmds {
		_ = c.Wait()
	}
}

// check asks verifier i about token and returns the status and the refusal's reason.
func (vs *verifiers) check(ctx context.Context, i int, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+vs.addrs[i]+"/verify", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := vs.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	return resp.StatusCode, strings.TrimSpace(string(body)), nil
}

// waitAll polls every verifier until each answers want for token.
func (vs *verifiers) waitAll(ctx context.Context, token string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i := range vs.addrs {
		for {
			code, reason, err := vs.check(ctx, i, token)
			if err == nil && code == want {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("verifier %d answered %d %s (%v), want %d", i, code, reason, err, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// refusedAt polls every verifier concurrently in a tight loop until it refuses token as revoked and
// returns when each did.
func (vs *verifiers) refusedAt(ctx context.Context, token string, timeout time.Duration) ([]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	times := make([]time.Time, len(vs.addrs))
	errs := make([]error, len(vs.addrs))
	var wg sync.WaitGroup
	for i := range vs.addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				code, reason, err := vs.check(ctx, i, token)
				switch {
				case err == nil && code == http.StatusUnauthorized && reason == authn.ReasonTokenRevoked:
					times[i] = time.Now()
					return
				case err == nil && code != http.StatusNoContent:
					errs[i] = fmt.Errorf("verifier %d refused with %d %s, want %s", i, code, reason, authn.ReasonTokenRevoked)
					return
				case ctx.Err() != nil:
					errs[i] = fmt.Errorf("verifier %d still accepts the token after %s", i, timeout)
					return
				}
			}
		}()
	}
	wg.Wait()
	return times, errors.Join(errs...)
}
