package loadtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/rotationload"
	"github.com/agentid/agentid/pkg/testkit"
)

// TestRotationUnderLoad rotates the default tenant's signing key of a real `agentid dev` while
// clients request tokens, and checks that no request failed and that a JWKS-caching verifier
// accepted every token at issuance and again before its expiry, with the new key's activation and
// the old key's removal both inside the run. It asserts counts, never timings.
func TestRotationUnderLoad(t *testing.T) {
	bin := testkit.BuildCommands(t, "./cmd/agentid")
	// Publish delay >= the verifier's JWKS refresh; retention >= the token lifetime + the re-verify
	// margin: far below the issuer's safe minimums (sized for 24 h tokens and 5 min JWKS caches), so
	// the test-only --signing-key-unsafe-short-durations.
	p := testkit.StartDevWith(t, filepath.Join(bin, "agentid"), t.TempDir(), testkit.DevOptions{Args: []string{
		"--signing-key-unsafe-short-durations",
		"--signing-key-publish-delay", "3s", "--signing-key-retention", "7s", "--signing-key-check-interval", "500ms",
	}})
	var stdout, stderr bytes.Buffer
	args := []string{"--data-dir", p.DataDir, "--server", p.GRPCAddr, "--tenant", "default",
		"--clients", "2", "--concurrency", "2", "--rotate-after", "1s", "--token-ttl", "4s", "--jwks-refresh", "2s",
		"--until-removed", "--duration", "3m", "-o", "json"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := rotationload.Main(ctx, args, &stdout, &stderr)
	t.Logf("report:\n%s\nprogress:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("rotationload exited %d\nagentid output:\n%s", code, p.Output())
	}
	var rep rotationload.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if rep.Failures != 0 || len(rep.FailureCodes) != 0 || rep.Requests == 0 || rep.OK != rep.Requests {
		t.Errorf("requests %d, issued %d, failed %d %v; want some, all issued", rep.Requests, rep.OK, rep.Failures, rep.FailureCodes)
	}
	if rep.VerificationFailures != 0 || len(rep.VerificationReasons) != 0 {
		t.Errorf("%d verifications refused: %v; want none", rep.VerificationFailures, rep.VerificationReasons)
	}
	if rep.Verified != rep.OK || rep.Reverified != rep.OK {
		t.Errorf("issued %d, verified at issuance %d, again %d; want every token verified twice", rep.OK, rep.Verified, rep.Reverified)
	}
	if rep.OldKid == "" || rep.NewKid == "" || rep.OldKid == rep.NewKid {
		t.Fatalf("old kid %q, new kid %q: want two different keys", rep.OldKid, rep.NewKid)
	}
	if rep.TokensPerKid[rep.OldKid] == 0 || rep.TokensPerKid[rep.NewKid] == 0 || len(rep.TokensPerKid) != 2 {
		t.Errorf("tokens per kid %v: want tokens signed by the old key %s and by the new key %s only", rep.TokensPerKid, rep.OldKid, rep.NewKid)
	}
	if r := rep.Rotation; r.RotatedAtSeconds == 0 || r.ActivatedAtSeconds == 0 || r.RemovedAtSeconds == 0 {
		t.Errorf("rotation %+v: want the rotation, the activation and the removal all seen within the run", r)
	}
	if rep.OldKidInJWKS || !rep.NewKidInJWKS || !slices.Contains(rep.JWKSAtEnd, rep.NewKid) {
		t.Errorf("JWKS at the end %v: want the new key %s and not the old key %s", rep.JWKSAtEnd, rep.NewKid, rep.OldKid)
	}
}
