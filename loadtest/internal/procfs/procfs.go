// Package procfs reads the memory use and CPU time of a process from Linux's /proc/<pid>/status and
// /proc/<pid>/stat.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on every Linux architecture
// Go supports).
const userHZ = 100

// Memory is one sample of a process's memory use.
type Memory struct {
	// PID is the process id.
	PID int `json:"pid"`
	// Name is the command name (the Name line of the status file).
	Name string `json:"name"`
	// RSSKiB is the resident set size (VmRSS) in KiB.
	RSSKiB int64 `json:"rss_kib"`
	// PeakRSSKiB is the largest resident set size so far (VmHWM) in KiB.
	PeakRSSKiB int64 `json:"peak_rss_kib"`
}

// ReadMemory samples /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	m, err := ParseStatus(bytes.NewReader(b))
	if err != nil {
		return Memory{}, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	m.PID = pid
	return m, nil
}

// ParseStatus parses the text of a /proc/<pid>/status file. VmRSS is required (kernel threads and
// zombies have none); VmHWM is optional.
func ParseStatus(r io.Reader) (Memory, error) {
	var m Memory
	var haveRSS bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "Name":
			m.Name = value
		case "VmRSS", "VmHWM":
			kib, err := parseKiB(value)
			if err != nil {
				return Memory{}, fmt.Errorf("%s: %w", key, err)
			}
			if key == "VmRSS" {
				m.RSSKiB, haveRSS = kib, true
			} else {
				m.PeakRSSKiB = kib
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if !haveRSS {
		return Memory{}, fmt.Errorf("no VmRSS line (kernel thread or exited process?)")
	}
	return m, nil
}

func parseKiB(v string) (int64, error) {
	num, unit, _ := strings.Cut(v, " ")
	if strings.TrimSpace(unit) != "kB" {
		return 0, fmt.Errorf("unexpected unit in %q (want kB)", v)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return n, nil
}

// ReadCPU returns the CPU time (user + system) process pid has used so far.
func ReadCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	d, err := ParseStatCPU(string(b))
	if err != nil {
		return 0, fmt.Errorf("procfs: pid %d: %w", pid, err)
	}
	return d, nil
}

// ParseStatCPU returns utime + stime of the text of a /proc/<pid>/stat file.
func ParseStatCPU(stat string) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may itself hold spaces and parentheses.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	fields := strings.Fields(stat[i+1:])
	const utime, stime = 14 - 3, 15 - 3 // field numbers of proc(5), counted from the state (field 3)
	if len(fields) <= stime {
		return 0, fmt.Errorf("stat: %d fields after the command name, want more than %d", len(fields), stime)
	}
	var ticks int64
	for _, f := range []string{fields[utime], fields[stime]} {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("stat: bad CPU time %q", f)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// MachineCPU is the CPU time of all CPUs of the machine since boot, from the cpu line of /proc/stat.
type MachineCPU struct {
	// Busy is the time spent on anything but idle and iowait.
	Busy time.Duration
	// Total is Busy plus idle and iowait.
	Total time.Duration
}

// ReadMachineCPU reads the cpu line of /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, fmt.Errorf("procfs: %w", err)
	}
	return ParseMachineCPU(string(b))
}

// ParseMachineCPU parses the text of /proc/stat: its "cpu" line has user, nice, system, idle,
// iowait, irq, softirq, steal (and guest times, already counted in user and nice).
func ParseMachineCPU(stat string) (MachineCPU, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 9 {
			return MachineCPU{}, fmt.Errorf("procfs: /proc/stat cpu line has %d fields, want at least 9", len(f))
		}
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil || n < 0 {
				return MachineCPU{}, fmt.Errorf("procfs: /proc/stat: bad value %q", f[i+1])
			}
			v[i] = n
		}
		idle := v[3] + v[4]
		busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }
		return MachineCPU{Busy: tick(busy), Total: tick(busy + idle)}, nil
	}
	return MachineCPU{}, fmt.Errorf("procfs: /proc/stat has no cpu line")
}
