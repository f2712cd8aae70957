package temporaldev

import (
	"strings"
	"testing"
)

// TestStderrSummary: after a crash the summary holds the lines before it and the crash's first
// lines, wherever the crash starts; otherwise the last 30 lines.
func TestStderrSummary(t *testing.T) {
	trace := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString("frame" + string(rune('A'+i%26)) + "\n")
		}
		return b.String()
	}
	tests := []struct {
		name, in      string
		want, wantNot []string
	}{
		{"nothing", "  \n", nil, []string{"server stderr"}},
		{"a panic after the cause", "cause: address already in use\npanic: boom\n" + trace(100),
			[]string{"(before the crash):\ncause: address already in use", "(the crash):\npanic: boom\nframeA"}, []string{"(tail)"}},
		{"a panic on the first line", "panic: boom\n" + trace(100),
			[]string{"(the crash):\npanic: boom"}, []string{"(before the crash)", "(tail)"}},
		{"a runtime's fatal error", "cause\nfatal error: concurrent map writes\n" + trace(100),
			[]string{"(before the crash):\ncause", "(the crash):\nfatal error: concurrent map writes"}, nil},
		{"no crash", strings.Repeat("line\n", 40) + "last line\n",
			[]string{"(tail):\n" + strings.Repeat("line\n", 29) + "last line"}, []string{"crash"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stderrSummary(tt.in)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("summary lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("summary has %q:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n"); n > 30 {
				t.Errorf("summary has %d lines, want at most 30", n+1)
			}
		})
	}
}

// TestTailBufferKeepsTheLastMaxBytes: whatever the sizes of the writes, String is the last max
// bytes written.
func TestTailBufferKeepsTheLastMaxBytes(t *testing.T) {
	b := &tailBuffer{max: 10}
	var all strings.Builder
	for i, w := range []string{"abc", "defghijklmnop", "q", "rstuvwxyz0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "!"} {
		_, _ = b.Write([]byte(w))
		all.WriteString(w)
		s := all.String()
		if want := s[max(0, len(s)-10):]; b.String() != want {
			t.Fatalf("after write %d: %q, want %q", i, b.String(), want)
		}
		if len(b.buf) > 20 {
			t.Fatalf("after write %d the buffer holds %d bytes, more than twice max", i, len(b.buf))
		}
	}
}
