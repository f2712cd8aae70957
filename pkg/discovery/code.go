package discovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-jose/go-jose/v4"

	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// DefaultMaxFileSize is the largest file a code scan reads by default (1 MiB).
const DefaultMaxFileSize = 1 << 20

// maxLine is the longest line scanned; longer lines (minified code, data) are cut.
const maxLine = 64 << 10

// binarySniff is how many leading bytes are checked for a NUL byte (a binary file).
const binarySniff = 8000

// skipDirs are directories a code scan does not enter (unless IncludeVendor for the vendored ones).
var skipDirs = map[string]bool{".git": true, ".hg": true, ".svn": true}

// vendorDirs hold third-party code.
var vendorDirs = map[string]bool{"vendor": true, "node_modules": true, "third_party": true, ".venv": true, "venv": true, "__pycache__": true}

// binaryExts are skipped without reading.
var binaryExts = map[string]bool{
	".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".ico": true, ".pdf": true, ".zip": true, ".gz": true,
	".tgz": true, ".bz2": true, ".xz": true, ".zst": true, ".jar": true, ".class": true, ".so": true, ".dylib": true,
	".dll": true, ".exe": true, ".o": true, ".a": true, ".wasm": true, ".woff": true, ".woff2": true, ".ttf": true,
	".mp3": true, ".mp4": true, ".mov": true, ".pyc": true, ".db": true, ".sqlite": true, ".parquet": true,
}

// CodeOptions tune a code scan.
type CodeOptions struct {
	// MaxFileSize: larger files are skipped; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// Workers scanning files in parallel; 0 means GOMAXPROCS.
	Workers int
	// IncludeVendor also scans vendor/, node_modules/, third_party/ and virtualenvs.
	IncludeVendor bool
}

// CodeStats count what a code scan read and skipped.
type CodeStats struct {
	// Files scanned.
	Files int64 `json:"files"`
	// Bytes scanned.
	Bytes int64 `json:"bytes"`
	// SkippedLarge: files over the size limit.
	SkippedLarge int64 `json:"skipped_large"`
	// SkippedBinary: binary files.
	SkippedBinary int64 `json:"skipped_binary"`
	// SkippedDirs: directories not entered (VCS metadata, vendored code).
	SkippedDirs int64 `json:"skipped_dirs"`
	// Unreadable: files that could not be read (permissions, vanished).
	Unreadable int64 `json:"unreadable"`
}

// ScanCode walks root and returns the findings of every rule, sorted by file, line and column,
// unresolved (ghost until Resolve says otherwise). Files are read one at a time per worker, at most
// MaxFileSize each, so memory stays bounded by workers × MaxFileSize plus the findings.
func ScanCode(ctx context.Context, root string, opts CodeOptions) ([]*registryv1.Finding, CodeStats, error) {
	var stats CodeStats
	info, err := os.Stat(root)
	if err != nil {
		return nil, stats, fmt.Errorf("scan %s: %w", root, err)
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct{ abs, rel string }
	jobs := make(chan job, opts.Workers*4)
	var (
		mu       sync.Mutex
		findings []*registryv1.Finding
		files    atomic.Int64
		nbytes   atomic.Int64
		binary   atomic.Int64
		large    atomic.Int64
		unread   atomic.Int64
		wg       sync.WaitGroup
	)
	for range opts.Workers {
		wg.Go(func() {
			var buf bytes.Buffer
			for j := range jobs {
				data, err := readBounded(j.abs, opts.MaxFileSize, &buf)
				switch {
				case errors.Is(err, errTooLarge):
					large.Add(1)
					continue
				case err != nil:
					unread.Add(1)
					continue
				}
				if isBinary(data) {
					binary.Add(1)
					continue
				}
				files.Add(1)
				nbytes.Add(int64(len(data)))
				if fs := ScanContent(j.rel, data); len(fs) > 0 {
					mu.Lock()
					findings = append(findings, fs...)
					mu.Unlock()
				}
			}
		})
	}

	walk := func() error {
		defer close(jobs)
		if !info.IsDir() {
			select {
			case jobs <- job{abs: root, rel: filepath.Base(root)}:
			case <-ctx.Done():
			}
			return ctx.Err()
		}
		return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == root {
					return err
				}
				unread.Add(1)
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			name := d.Name()
			if d.IsDir() {
				if path != root && (skipDirs[name] || (!opts.IncludeVendor && vendorDirs[name])) {
					stats.SkippedDirs++
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if binaryExts[strings.ToLower(filepath.Ext(name))] {
				binary.Add(1)
				return nil
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				rel = path
			}
			select {
			case jobs <- job{abs: path, rel: filepath.ToSlash(rel)}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	werr := walk()
	wg.Wait()
	stats.Files, stats.Bytes, stats.SkippedBinary, stats.SkippedLarge, stats.Unreadable =
		files.Load(), nbytes.Load(), binary.Load(), large.Load(), unread.Load()
	if werr != nil {
		return nil, stats, fmt.Errorf("scan %s: %w", root, werr)
	}
	SortFindings(findings)
	return findings, stats, nil
}

// errTooLarge marks a file over the size limit.
var errTooLarge = errors.New("file too large")

// readBounded reads path into buf (reset first) unless it is larger than limit.
func readBounded(path string, limit int64, buf *bytes.Buffer) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, errTooLarge
	}
	buf.Reset()
	// Read at most limit+1 bytes: a file that grew past the limit since Stat is still refused.
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// isBinary reports whether data looks binary (a NUL byte near the start).
func isBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), binarySniff)], 0) >= 0
}

// SortFindings orders findings by file, line, column and rule.
func SortFindings(fs []*registryv1.Finding) {
	slices.SortFunc(fs, func(a, b *registryv1.Finding) int {
		return cmp.Or(cmp.Compare(a.GetFile(), b.GetFile()), cmp.Compare(a.GetLine(), b.GetLine()),
			cmp.Compare(a.GetColumn(), b.GetColumn()), cmp.Compare(a.GetRuleId(), b.GetRuleId()))
	})
}

var (
	nameHintRE      = regexp.MustCompile(`(?m)^\s*name:\s*["']?([A-Za-z0-9._-]+)["']?\s*$`)
	namespaceHintRE = regexp.MustCompile(`(?m)^\s*namespace:\s*["']?([a-z0-9.-]+)["']?\s*$`)
	envHintRE       = regexp.MustCompile(`(?m)^\s*environment:\s*["']?([A-Za-z]+)["']?\s*$`)
)

// span is a matched byte range of a line.
type span struct{ start, end int }

// ScanContent runs every rule over one file's content (named file in the findings).
func ScanContent(file string, data []byte) []*registryv1.Finding {
	lower := bytes.ToLower(data)
	var active []*Rule
	for _, r := range rules {
		if ruleApplies(r, lower) {
			active = append(active, r)
		}
	}
	if len(active) == 0 {
		return nil
	}
	var (
		out   []*registryv1.Finding
		once  = map[string]bool{}
		hints map[string]string
	)
	fileHints := func() map[string]string {
		if hints == nil {
			hints = map[string]string{}
			if m := nameHintRE.FindSubmatch(data); m != nil {
				hints["name"] = string(m[1])
			}
			if m := namespaceHintRE.FindSubmatch(data); m != nil {
				hints["namespace"] = string(m[1])
			}
			if m := envHintRE.FindSubmatch(data); m != nil {
				hints["environment"] = strings.ToLower(string(m[1]))
			}
		}
		return hints
	}
	lineNo := 0
	rest := data
	offset := 0
	for len(rest) > 0 {
		lineNo++
		i := bytes.IndexByte(rest, '\n')
		var line []byte
		if i < 0 {
			line, rest = rest, nil
		} else {
			line, rest = rest[:i], rest[i+1:]
		}
		lineStart := offset
		offset += len(line) + 1
		if len(line) > maxLine {
			line = line[:maxLine]
		}
		var taken []span
		for _, r := range active {
			if r.oncePerFile && once[r.ID] {
				continue
			}
			for _, m := range r.re.FindAllSubmatchIndex(line, -1) {
				s, e := m[2*r.group], m[2*r.group+1]
				if s < 0 {
					continue
				}
				if r.generic && overlaps(taken, s, e) {
					continue
				}
				value := string(line[s:e])
				if r.pem {
					block, ok := pemBlock(data[lineStart+s:])
					if !ok {
						continue
					}
					value = block
				}
				if r.accept != nil && !r.accept(value) {
					continue
				}
				taken = append(taken, span{s, e})
				f := newCodeFinding(r, file, lineNo, s+1, value)
				if r.Kind == kindDef || r.Kind == kindClient {
					for k, v := range fileHints() {
						f.Hints[k] = v
					}
				}
				out = append(out, f)
				if r.oncePerFile {
					once[r.ID] = true
					break
				}
			}
		}
	}
	return out
}

// ruleApplies reports whether the file's lowercased content has a keyword of r and all its
// required strings.
func ruleApplies(r *Rule, lower []byte) bool {
	for _, req := range r.fileRequires {
		if !bytes.Contains(lower, []byte(req)) {
			return false
		}
	}
	for _, k := range r.keywords {
		if bytes.Contains(lower, []byte(k)) {
			return true
		}
	}
	return false
}

func overlaps(taken []span, s, e int) bool {
	for _, t := range taken {
		if s < t.end && t.start < e {
			return true
		}
	}
	return false
}

// newCodeFinding builds the finding of rule r for value at file:line:col. Secrets are redacted;
// identifiers (client ids, agent ids) are shown in full.
func newCodeFinding(r *Rule, file string, line, col int, value string) *registryv1.Finding {
	fp := Fingerprint(value)
	f := &registryv1.Finding{
		Source:      registryv1.FindingSource_FINDING_SOURCE_CODE,
		Kind:        r.Kind,
		RuleId:      r.ID,
		Severity:    r.Severity,
		File:        file,
		Line:        int32(line),
		Column:      int32(col),
		Fingerprint: fp,
		Ghost:       true,
		Hints:       map[string]string{},
	}
	switch {
	case r.pem:
		f.RedactedValue = Redact(pemBody(value))
		if tp, ok := keyThumbprint(value); ok {
			f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_KEY_THUMBPRINT, Value: tp}
		}
	case r.secret && r.noPrefix:
		f.RedactedValue = "…"
		f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT, Value: fp}
	case r.secret:
		f.RedactedValue = Redact(value)
		f.Identifier = &registryv1.Identifier{Kind: registryv1.IdentifierKind_IDENTIFIER_KIND_SECRET_FINGERPRINT, Value: fp}
	default:
		f.RedactedValue = value
		kind := r.ident
		if kind == registryv1.IdentifierKind_IDENTIFIER_KIND_UNSPECIFIED && agentIDRE.MatchString(value) {
			kind = registryv1.IdentifierKind_IDENTIFIER_KIND_AGENT_ID
		}
		if kind != registryv1.IdentifierKind_IDENTIFIER_KIND_UNSPECIFIED {
			f.Identifier = &registryv1.Identifier{Kind: kind, Value: value}
		}
	}
	f.Message = r.Description + " (" + f.GetRedactedValue() + ")"
	f.Id = FindingID(f.Source, f.RuleId, fp, file)
	return f
}

// agentIDRE is the form of an agent id.
var agentIDRE = regexp.MustCompile(`^agt_[0-9a-hjkmnp-tv-z]{26}$`)

// maxPEM bounds how far a PEM block is looked for.
const maxPEM = 64 << 10

// pemBlock returns the PEM block starting at b (through its END line), false when it has none.
func pemBlock(b []byte) (string, bool) {
	b = b[:min(len(b), maxPEM)]
	end := bytes.Index(b, []byte("-----END "))
	if end < 0 {
		return "", false
	}
	tail := bytes.Index(b[end+9:], []byte("-----"))
	if tail < 0 {
		return "", false
	}
	return string(b[:end+9+tail+5]), true
}

// pemBody is the base64 body of a PEM block, its lines joined (what a redacted prefix shows).
func pemBody(block string) string {
	var sb strings.Builder
	for l := range strings.SplitSeq(block, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "-----") || strings.Contains(l, ":") {
			continue
		}
		sb.WriteString(l)
	}
	return sb.String()
}

// keyThumbprint is the RFC 7638 SHA-256 thumbprint (base64url) of the public half of a PEM private
// key (PKCS#8, SEC 1 EC or PKCS#1 RSA); false for keys it cannot parse (encrypted, OpenSSH).
func keyThumbprint(block string) (string, bool) {
	p, _ := pem.Decode([]byte(strings.ReplaceAll(block, "\r", "")))
	if p == nil {
		return "", false
	}
	var key any
	var err error
	switch p.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(p.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(p.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(p.Bytes)
	default:
		return "", false
	}
	if err != nil {
		return "", false
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return "", false
	}
	tp, err := (&jose.JSONWebKey{Key: signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", false
	}
	return base64.RawURLEncoding.EncodeToString(tp), true
}
