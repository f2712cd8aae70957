package tokenload

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentid/agentid/loadtest/internal/stats"
	"github.com/agentid/agentid/loadtest/internal/tokenclient"
)

// LoadConfig is the token request phase of a run.
type LoadConfig struct {
	// Client sends the token requests.
	Client *tokenclient.Client
	// Identities are the agents' OAuth clients, used round-robin.
	Identities []*tokenclient.Identity
	// Concurrency is the number of workers.
	Concurrency int
	// Duration bounds the phase in time: no request starts after it.
	Duration time.Duration
	// Requests, when not 0, is the number of requests to send (else at most MaxRequests).
	Requests int
	// Rate, when not 0, starts requests at this rate per second (open loop).
	Rate float64
	// Assertions, when set, are signed beforehand: request n uses Assertions[n] with
	// Identities[n % len(Identities)] (as PreSign made them), and at most len(Assertions) are sent.
	Assertions []string
}

// LoadResult is what the token request phase measured.
type LoadResult struct {
	// Requests is the number of completed requests (successful or not). Requests cut short by the
	// caller's context are not counted.
	Requests int64
	// OK is the number of successful token responses.
	OK int64
	// Errors counts the failed requests by error code (tokenclient.Error.Code).
	Errors map[string]int64
	// Elapsed is the time from the first request's start to the last one's end.
	Elapsed time.Duration
	// Latency is the distribution of successful request latencies.
	Latency *stats.Histogram
}

type worker struct {
	ok      int64
	errors  map[string]int64
	latency *stats.Histogram
}

func (w *worker) do(ctx context.Context, cfg *LoadConfig, n int64, start time.Time) (stop bool) {
	id := cfg.Identities[int(n%int64(len(cfg.Identities)))]
	var err error
	if cfg.Assertions != nil {
		_, err = cfg.Client.RequestWithAssertion(ctx, id, cfg.Assertions[n])
	} else {
		_, err = cfg.Client.Request(ctx, id)
	}
	took := time.Since(start)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return true
	}
	if err != nil {
		w.errors[tokenclient.Code(err)]++
		return false
	}
	w.ok++
	w.latency.Record(took)
	return false
}

// Load sends token requests until cfg.Duration has passed, cfg.Requests were sent, or ctx ends.
func Load(ctx context.Context, cfg LoadConfig) LoadResult {
	limit := int64(cfg.Requests)
	if limit <= 0 {
		limit = MaxRequests
	}
	if cfg.Assertions != nil {
		limit = min(limit, int64(len(cfg.Assertions)))
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	workers := make([]*worker, max(cfg.Concurrency, 1))
	var wg sync.WaitGroup
	var claimed atomic.Int64 // request slots handed out; each is sent at most once
	var jobs chan time.Time
	if cfg.Rate > 0 {
		jobs = make(chan time.Time, len(workers))
		go schedule(ctx, jobs, start, deadline, limit, cfg.Rate)
	}
	for i := range workers {
		w := &worker{errors: map[string]int64{}, latency: stats.NewHistogram()}
		workers[i] = w
		wg.Go(func() {
			if jobs != nil {
				for scheduled := range jobs {
					if w.do(ctx, &cfg, claimed.Add(1)-1, scheduled) {
						return
					}
				}
				return
			}
			for ctx.Err() == nil && time.Now().Before(deadline) {
				n := claimed.Add(1) - 1
				if n >= limit {
					return
				}
				if w.do(ctx, &cfg, n, time.Now()) {
					return
				}
			}
		})
	}
	wg.Wait()
	res := LoadResult{Errors: map[string]int64{}, Elapsed: time.Since(start), Latency: stats.NewHistogram()}
	for _, w := range workers {
		res.OK += w.ok
		res.Requests += w.ok
		for code, n := range w.errors {
			res.Errors[code] += n
			res.Requests += n
		}
		res.Latency.Merge(w.latency)
	}
	return res
}

// schedule sends the scheduled start time of each request at rate per second until the deadline,
// limit requests or the end of ctx, then closes jobs. When the workers fall behind, requests queue
// and their latency includes the wait (no coordinated omission); nothing is scheduled after the
// deadline.
func schedule(ctx context.Context, jobs chan<- time.Time, start, deadline time.Time, limit int64, rate float64) {
	defer close(jobs)
	interval := time.Duration(float64(time.Second) / rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := int64(0); i < limit; i++ {
		at := start.Add(time.Duration(i) * interval)
		if !at.Before(deadline) {
			return
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if !time.Now().Before(deadline) {
			return
		}
		select {
		case jobs <- at:
		case <-ctx.Done():
			return
		}
	}
}

// PreSign signs n client assertions for audience, the i-th for ids[i % len(ids)], on every CPU, so
// that the request phase measures the server and not the generator's signing. They must be used
// within authn.AssertionLifetime of now.
func PreSign(ctx context.Context, ids []*tokenclient.Identity, audience string, n int) ([]string, error) {
	if len(ids) == 0 {
		return nil, errors.New("no identities to sign for")
	}
	out := make([]string, n)
	now := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				a, err := ids[i%len(ids)].Assertion(audience, now)
				if err != nil {
					errs[w] = err
					return
				}
				out[i] = a
			}
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, fmt.Errorf("pre-sign assertions: %w", err)
	}
	return out, nil
}
