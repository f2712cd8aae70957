// Package engine compiles a Rego policy bundle once and evaluates the platform's decision points
// against it, failing closed: anything but a well-formed decision is a deny.
package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// File is one Rego module of a bundle.
type File struct {
	// Name is the file's slash-separated path inside the bundle.
	Name string
	// Source is the module's text.
	Source string
}

// IsTest reports whether the file holds Rego unit tests (a "_test.rego" suffix); tests are
// versioned with the bundle but never evaluated at a decision point.
func (f File) IsTest() bool { return strings.HasSuffix(f.Name, "_test.rego") }

// Bundle is a set of Rego modules, sorted by name.
type Bundle struct {
	files []File
}

// LoadFS reads every ".rego" file of fsys, recursively.
func LoadFS(fsys fs.FS) (Bundle, error) {
	var files []File
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(p) != ".rego" {
			return nil
		}
		src, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, File{Name: p, Source: string(src)})
		return nil
	})
	if err != nil {
		return Bundle{}, fmt.Errorf("policy bundle: %w", err)
	}
	return NewBundle(files...)
}

// LoadDir reads every ".rego" file under dir, recursively.
func LoadDir(dir string) (Bundle, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return Bundle{}, fmt.Errorf("policy bundle: %w", err)
	}
	if !info.IsDir() {
		return Bundle{}, fmt.Errorf("policy bundle: %s is not a directory", dir)
	}
	return LoadFS(os.DirFS(dir))
}

// NewBundle returns a bundle of files; it needs at least one policy module besides tests, and
// unique names.
func NewBundle(files ...File) (Bundle, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	policies := 0
	for i, f := range files {
		if i > 0 && files[i-1].Name == f.Name {
			return Bundle{}, fmt.Errorf("policy bundle: duplicate file %s", f.Name)
		}
		if !f.IsTest() {
			policies++
		}
	}
	if policies == 0 {
		return Bundle{}, fmt.Errorf("policy bundle: no policy modules (.rego files other than *_test.rego)")
	}
	return Bundle{files: files}, nil
}

// Files returns the bundle's files, sorted by name.
func (b Bundle) Files() []File { return slices.Clone(b.files) }

// Version identifies the bundle's content: "sha256:" and the hex SHA-256 over every file, sorted by
// name, as name, NUL, source, NUL. Any change to any file, tests included, changes it.
func (b Bundle) Version() string {
	h := sha256.New()
	for _, f := range b.files {
		h.Write([]byte(f.Name))
		h.Write([]byte{0})
		h.Write([]byte(f.Source))
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ParseModules parses every file of the bundle, tests included, as Rego v1, keyed by file name
// (the form OPA's tester and compiler take).
func (b Bundle) ParseModules() (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(b.files))
	for _, f := range b.files {
		m, err := ast.ParseModuleWithOpts(f.Name, f.Source, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("policy bundle: %w", err)
		}
		mods[f.Name] = m
	}
	return mods, nil
}
