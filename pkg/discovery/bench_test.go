package discovery_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/discovery"
)

// benchFiles is the size of the generated tree (AGENTID_DISCOVERY_BENCH_FILES overrides it).
func benchFiles() int {
	if n, err := strconv.Atoi(os.Getenv("AGENTID_DISCOVERY_BENCH_FILES")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// genTree writes n files of ordinary code and config (Go, Python, YAML, .env) into dir, 1,000 per
// directory, with a planted credential in one file of 100.
func genTree(tb testing.TB, dir string, n int) int64 {
	tb.Helper()
	var total int64
	bodies := []string{
		"package svc\n\nimport \"fmt\"\n\n// Handler serves requests.\nfunc Handler(id int) string {\n\tfor i := 0; i < id; i++ {\n\t\tfmt.Println(i)\n\t}\n\treturn fmt.Sprintf(\"item-%d\", id)\n}\n",
		"import os\nimport json\n\ndef load(path):\n    with open(path) as f:\n        return json.load(f)\n\nTIMEOUT = 30\nRETRIES = int(os.environ.get('RETRIES', '3'))\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: web\n          image: registry.local/web:1.2.3\n",
		"LOG_LEVEL=info\nPORT=8080\nDATABASE_URL=postgres://db.internal:5432/app\nFEATURE_FLAGS=a,b,c\n",
	}
	exts := []string{".go", ".py", ".yaml", ".env"}
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		k := i % len(bodies)
		body := fmt.Sprintf("// file %d\n", i) + bodies[k] + bodies[k] // about 0.3 KB
		if i%100 == 0 {
			body += fmt.Sprintf("AWS_ACCESS_KEY_ID = \"AKIAQ3EGVX%010d\"\nclient_id: bench-client-%d\n", i, i)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d%s", i, exts[k])), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
		total += int64(len(body))
	}
	return total
}

// BenchmarkScanCode scans a generated tree of 100,000 files (reported: files/s, MB/s, peak RSS of
// the process). Nothing is asserted about time.
func BenchmarkScanCode(b *testing.B) {
	n := benchFiles()
	dir := b.TempDir()
	genStart := time.Now()
	size := genTree(b, dir, n)
	b.Logf("generated %d files, %.1f MB in %s", n, float64(size)/1e6, time.Since(genStart).Round(time.Millisecond))
	b.ResetTimer()
	var findings int
	for b.Loop() {
		fs, st, err := discovery.ScanCode(b.Context(), dir, discovery.CodeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if st.Files != int64(n) {
			b.Fatalf("scanned %d files, want %d", st.Files, n)
		}
		findings = len(fs)
	}
	elapsed := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(n)/elapsed, "files/s")
	b.ReportMetric(float64(size)/1e6/elapsed, "MB/s")
	b.ReportMetric(float64(findings), "findings")
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MB")
	}
}
