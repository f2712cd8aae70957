package procfs_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/loadtest/internal/procfs"
)

const status = `Name:	agentid
Umask:	0022
State:	S (sleeping)
Pid:	4242
VmPeak:	 2345678 kB
VmHWM:	  215040 kB
VmRSS:	  180224 kB
Threads:	17
`

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procfs.Memory
		wantErr string
	}{
		{name: "full", in: status, want: procfs.Memory{Name: "agentid", RSSKiB: 180224, PeakRSSKiB: 215040}},
		{name: "no VmHWM", in: "Name:\tx\nVmRSS:\t12 kB\n", want: procfs.Memory{Name: "x", RSSKiB: 12}},
		{name: "kernel thread", in: "Name:\tkthreadd\nState:\tS\n", wantErr: "no VmRSS"},
		{name: "bad number", in: "VmRSS:\tlots kB\n", wantErr: "VmRSS: bad size"},
		{name: "bad unit", in: "VmRSS:\t12 MB\n", wantErr: "unexpected unit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := procfs.ParseStatus(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadMemoryOfThisProcess(t *testing.T) {
	m, err := procfs.ReadMemory(os.Getpid())
	if err != nil {
		t.Fatalf("read /proc of this process: %v", err)
	}
	if m.PID != os.Getpid() || m.RSSKiB <= 0 || m.PeakRSSKiB < m.RSSKiB {
		t.Errorf("ReadMemory(self) = %+v, want pid %d, rss > 0 and peak >= rss", m, os.Getpid())
	}
	if _, err := procfs.ReadMemory(1 << 30); err == nil {
		t.Error("ReadMemory of a pid that cannot exist succeeded")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 150 and 50 ticks; the command name holds ") (" and spaces.
	const stat = "4242 (odd ) (name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 17 0 12345 2345678 45056 18446744073709551615\n"
	got, err := procfs.ParseStatCPU(stat)
	if err != nil || got != 2*time.Second {
		t.Fatalf("ParseStatCPU = %v, %v; want 2s (200 ticks at 100 Hz)", got, err)
	}
	for _, bad := range []string{"4242 no-parens S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 -5 0 0"} {
		if _, err := procfs.ParseStatCPU(bad); err == nil {
			t.Errorf("ParseStatCPU(%q) succeeded, want an error", bad)
		}
	}
}

func TestReadCPUOfThisProcess(t *testing.T) {
	before, err := procfs.ReadCPU(os.Getpid())
	if err != nil {
		t.Fatalf("read /proc of this process: %v", err)
	}
	for x, start := 0, time.Now(); time.Since(start) < 100*time.Millisecond; x++ {
		_ = x * x
	}
	after, err := procfs.ReadCPU(os.Getpid())
	if err != nil || after < before {
		t.Errorf("ReadCPU: %v then %v (%v); want a non-decreasing CPU time", before, after, err)
	}
}

func TestParseMachineCPU(t *testing.T) {
	const stat = "cpu  100 20 30 800 50 5 5 10 7 0\ncpu0 50 10 15 400 25 2 3 5 0 0\nintr 1 2 3\n"
	got, err := procfs.ParseMachineCPU(stat)
	want := procfs.MachineCPU{Busy: 1700 * time.Millisecond, Total: 10200 * time.Millisecond} // 170 and 1020 ticks
	if err != nil || got != want {
		t.Fatalf("ParseMachineCPU = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"intr 1 2\n", "cpu 1 2 3\n", "cpu 1 2 3 x 5 6 7 8\n"} {
		if _, err := procfs.ParseMachineCPU(bad); err == nil {
			t.Errorf("ParseMachineCPU(%q) succeeded, want an error", bad)
		}
	}
	if m, err := procfs.ReadMachineCPU(); err == nil && (m.Busy <= 0 || m.Total < m.Busy) {
		t.Errorf("ReadMachineCPU = %+v, want 0 < busy <= total", m)
	}
}
