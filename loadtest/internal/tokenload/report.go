package tokenload

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentid/agentid/loadtest/internal/stats"
)

// Report is the result of a run; its JSON form is the -o json output.
type Report struct {
	// Target is what was measured.
	Target Target `json:"target"`
	// Settings are the run's settings.
	Settings Settings `json:"settings"`
	// Provisioning is the register → active latency of the agents.
	Provisioning Provisioning `json:"provisioning"`
	// Tokens is the token request phase.
	Tokens Tokens `json:"tokens"`
	// Processes has one entry per --pid.
	Processes []Process `json:"processes"`
}

// Target is the platform under load.
type Target struct {
	// Server is the gRPC address.
	Server string `json:"server"`
	// Issuer is the tenant's issuer identifier.
	Issuer string `json:"issuer"`
	// TokenURL is the token endpoint.
	TokenURL string `json:"token_url"`
	// Tenant is the tenant id.
	Tenant string `json:"tenant"`
	// CPUs is the number of CPUs of this machine (the generator and the platform share them).
	CPUs int `json:"cpus"`
}

// Settings are the load settings of a run.
type Settings struct {
	// Agents is the number of agents.
	Agents int `json:"agents"`
	// Concurrency is the number of workers.
	Concurrency int `json:"concurrency"`
	// DurationSeconds is the time bound.
	DurationSeconds float64 `json:"duration_seconds"`
	// Requests is the count bound (0: none).
	Requests int `json:"requests"`
	// Rate is the open-loop rate in requests/s (0: closed loop).
	Rate float64 `json:"rate"`
	// Mode is "closed" (workers back to back) or "open" (fixed start rate).
	Mode string `json:"mode"`
	// Presigned is true when the assertions were signed before the request phase.
	Presigned bool `json:"presigned"`
}

// Provisioning is how long the platform took to provision the agents.
type Provisioning struct {
	// Agents is the number of agents provisioned.
	Agents int `json:"agents"`
	// ElapsedSeconds is the time to provision all of them.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// RegisterToActive is the distribution of RegisterAgent → agent seen ACTIVE.
	RegisterToActive stats.Summary `json:"register_to_active"`
	// RegisterToToken is the distribution of RegisterAgent → first successful token response.
	RegisterToToken stats.Summary `json:"register_to_token"`
}

// Tokens is the token request phase.
type Tokens struct {
	// Requests is the number of completed token requests.
	Requests int64 `json:"requests"`
	// OK is the number of successful ones.
	OK int64 `json:"ok"`
	// ErrorCount is the number of failed ones.
	ErrorCount int64 `json:"error_count"`
	// Errors counts failures by OAuth error code (or transport_error, http_<status>, ...).
	Errors map[string]int64 `json:"errors"`
	// ElapsedSeconds is the length of the phase.
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// TokensPerSecond is OK / ElapsedSeconds.
	TokensPerSecond float64 `json:"tokens_per_second"`
	// Latency is the distribution of successful request latencies.
	Latency stats.Summary `json:"latency"`
	// GeneratorCPUSeconds is the CPU time the generator itself used during the phase: it shares the
	// machine with the platform.
	GeneratorCPUSeconds float64 `json:"generator_cpu_seconds"`
	// MachineCPUBusySeconds is the CPU time all processes of the machine used during the phase (out of
	// ElapsedSeconds × CPUs): what the generator and the --pid processes did not use went to others.
	MachineCPUBusySeconds float64 `json:"machine_cpu_busy_seconds"`
}

// Process is the memory of one process before and after the run, and its CPU use during the token
// request phase.
type Process struct {
	// PID is the process id.
	PID int `json:"pid"`
	// Name is the process's command name.
	Name string `json:"name"`
	// StartRSSKiB is VmRSS before provisioning.
	StartRSSKiB int64 `json:"start_rss_kib"`
	// EndRSSKiB is VmRSS after the token requests.
	EndRSSKiB int64 `json:"end_rss_kib"`
	// PeakRSSKiB is VmHWM after the token requests: the largest RSS the process ever had.
	PeakRSSKiB int64 `json:"peak_rss_kib"`
	// LoadCPUSeconds is the CPU time (user + system) the process used during the token request phase.
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// Error says why a sample is missing (the process exited, ...).
	Error string `json:"error,omitempty"`
}

// TokensOf summarises a LoadResult for the report.
func TokensOf(r LoadResult) Tokens {
	t := Tokens{Requests: r.Requests, OK: r.OK, Errors: r.Errors, ElapsedSeconds: r.Elapsed.Seconds(),
		Latency: r.Latency.Summary()}
	if t.Errors == nil {
		t.Errors = map[string]int64{}
	}
	for _, n := range t.Errors {
		t.ErrorCount += n
	}
	if r.Elapsed > 0 {
		t.TokensPerSecond = float64(r.OK) / r.Elapsed.Seconds()
	}
	return t
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	s := r.Settings
	bound := fmt.Sprintf("%v", time.Duration(s.DurationSeconds*float64(time.Second)))
	if s.Requests > 0 {
		bound = fmt.Sprintf("%d requests (cap %s)", s.Requests, bound)
	}
	mode := "closed loop"
	if s.Mode == "open" {
		mode = fmt.Sprintf("open loop at %g requests/s", s.Rate)
	}
	if s.Presigned {
		mode += ", assertions pre-signed"
	}
	fmt.Fprintf(tw, "target\t%s (gRPC %s), %d CPUs shared with the generator\n", r.Target.TokenURL, r.Target.Server, r.Target.CPUs)
	fmt.Fprintf(tw, "load\t%d agents, concurrency %d, %s, %s\n", s.Agents, s.Concurrency, bound, mode)
	p := r.Provisioning
	fmt.Fprintf(tw, "provisioning\t%d agents in %.1fs\n", p.Agents, p.ElapsedSeconds)
	fmt.Fprintf(tw, "  register → active\t%s\n", summaryText(p.RegisterToActive))
	fmt.Fprintf(tw, "  register → first token\t%s\n", summaryText(p.RegisterToToken))
	t := r.Tokens
	fmt.Fprintf(tw, "token requests\t%d (ok %d, errors %d) in %.2fs\n", t.Requests, t.OK, t.ErrorCount, t.ElapsedSeconds)
	if len(t.Errors) > 0 {
		var parts []string
		for _, code := range slices.Sorted(maps.Keys(t.Errors)) {
			parts = append(parts, fmt.Sprintf("%s %d", code, t.Errors[code]))
		}
		fmt.Fprintf(tw, "  errors\t%s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(tw, "throughput\t%.1f tokens/s\n", t.TokensPerSecond)
	fmt.Fprintf(tw, "latency\t%s\n", summaryText(t.Latency))
	fmt.Fprintf(tw, "generator CPU\t%s\n", cpuText(t.GeneratorCPUSeconds, t.ElapsedSeconds))
	fmt.Fprintf(tw, "machine CPU\t%s busy, all processes\n", cpuText(t.MachineCPUBusySeconds, t.ElapsedSeconds))
	for _, m := range r.Processes {
		if m.Error != "" {
			fmt.Fprintf(tw, "pid %d %s\t%s\n", m.PID, m.Name, m.Error)
			continue
		}
		perToken := ""
		if t.OK > 0 {
			perToken = fmt.Sprintf(", %s per token", stats.Format(time.Duration(m.LoadCPUSeconds*float64(time.Second)/float64(t.OK))))
		}
		fmt.Fprintf(tw, "pid %d %s\tRSS %s before, %s after, peak %s; CPU %s%s\n", m.PID, m.Name,
			mib(m.StartRSSKiB), mib(m.EndRSSKiB), mib(m.PeakRSSKiB), cpuText(m.LoadCPUSeconds, t.ElapsedSeconds), perToken)
	}
	return tw.Flush()
}

func summaryText(s stats.Summary) string {
	if s.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (min %s, mean %s, n=%d)",
		stats.Format(s.P50), stats.Format(s.P90), stats.Format(s.P99), stats.Format(s.Max),
		stats.Format(s.Min), stats.Format(s.Mean), s.Count)
}

func cpuText(cpu, elapsed float64) string {
	if elapsed <= 0 {
		return fmt.Sprintf("%.2fs", cpu)
	}
	return fmt.Sprintf("%.2fs during the token requests (%.2f cores)", cpu, cpu/elapsed)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
