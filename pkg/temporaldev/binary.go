package temporaldev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BinaryEnv names the environment variable that points at a prebuilt `temporal` CLI binary.
const BinaryEnv = "AGENTID_TEMPORAL_BIN"

// CLIPackage is the Go package of the `temporal` CLI pinned in tools/temporal/go.mod.
const CLIPackage = "github.com/temporalio/cli/cmd/temporal"

// BuildCommand is the command that builds the pinned CLI into .bin/temporal, run from the repository root.
const BuildCommand = "cd tools/temporal && GOWORK=off go build -o ../../.bin/temporal " + CLIPackage

// ErrBinaryNotFound marks a missing `temporal` binary that could not be built either.
var ErrBinaryNotFound = errors.New("temporaldev: temporal CLI binary not found")

// EnsureBinary returns the path of the `temporal` CLI: $AGENTID_TEMPORAL_BIN when set (it must exist),
// otherwise <repo>/.bin/temporal, where <repo> is the nearest directory above the working directory that
// holds go.work and tools/temporal/go.mod. A missing or outdated binary (older than
// tools/temporal/go.mod or go.sum) is built with `go build` in tools/temporal (GOWORK=off); concurrent callers,
// in this or other processes, build it once. The first build takes several minutes.
func EnsureBinary(ctx context.Context) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %v", ErrBinaryNotFound, BinaryEnv, p, err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("temporaldev: working directory: %w", err)
	}
	root, err := repoRoot(wd)
	if err != nil {
		return "", err
	}
	return ensureBuilt(ctx, root)
}

// repoRoot walks up from dir to the directory holding go.work and tools/temporal/go.mod.
func repoRoot(dir string) (string, error) {
	for d := dir; ; {
		if fileExists(filepath.Join(d, "go.work")) && fileExists(filepath.Join(d, "tools", "temporal", "go.mod")) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("%w: no go.work with tools/temporal/go.mod above %s; set $%s to a temporal CLI binary",
				ErrBinaryNotFound, dir, BinaryEnv)
		}
		d = parent
	}
}

func ensureBuilt(ctx context.Context, root string) (string, error) {
	bin := filepath.Join(root, ".bin", "temporal")
	modFile := filepath.Join(root, "tools", "temporal", "go.mod")
	if upToDate(bin, modFile) {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", fmt.Errorf("temporaldev: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(root, ".bin", ".temporal.build.lock"))
	if err != nil {
		return "", fmt.Errorf("temporaldev: lock for building the temporal CLI: %w", err)
	}
	defer unlock()
	if upToDate(bin, modFile) { // another process built it while we waited
		return bin, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("%w: %s is missing and no go toolchain is on PATH to build it (%s): %v",
			ErrBinaryNotFound, bin, BuildCommand, err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, CLIPackage)
	cmd.Dir = filepath.Dir(modFile)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("%w: building it failed (%s): %v\n%s", ErrBinaryNotFound, BuildCommand, err, lastLines(out.String(), 20))
	}
	if err := os.Rename(tmp, bin); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("temporaldev: install %s: %w", bin, err)
	}
	return bin, nil
}

// upToDate reports whether bin is an executable file at least as new as modFile and its go.sum.
func upToDate(bin, modFile string) bool {
	bi, err := os.Stat(bin)
	if err != nil || checkExecutable(bin) != nil {
		return false
	}
	for _, f := range []string{modFile, strings.TrimSuffix(modFile, ".mod") + ".sum"} {
		if fi, err := os.Stat(f); err == nil && bi.ModTime().Before(fi.ModTime()) {
			return false
		}
	}
	return true
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
