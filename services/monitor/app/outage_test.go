package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/testkit"
	"github.com/agentid/agentid/services/monitor/app"
	"github.com/agentid/agentid/services/monitor/internal/ingest"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
)

// Settings of the outage tests. The defaults suit CI; the measurement run sets them, e.g.
//
//	AGENTID_OUTAGE_SECONDS=60 AGENTID_OUTAGE_RATE=20000 go test -count=1 -v -timeout 30m \
//	    -run 'Outage' ./services/monitor/app/
const (
	outageSecondsEnv = "AGENTID_OUTAGE_SECONDS" // how long the store is down (default 10)
	outageRateEnv    = "AGENTID_OUTAGE_RATE"    // telemetry rows published per second (default 3000)
	outageAgentsEnv  = "AGENTID_OUTAGE_AGENTS"  // agents the rows are spread over (default 20)
)

// outageRun is one run of the monitor under load through a store outage.
type outageRun struct {
	t      *testing.T
	es     *eventstore.Store
	esReg  *prometheus.Registry
	mon    *monitor
	gen    *loadGen
	outage time.Duration

	stopLoad func()
}

// startOutageRun starts NATS, registers the agents, runs the monitor with cfg and the load.
func startOutageRun(t *testing.T, cfg app.Config) *outageRun {
	t.Helper()
	n := testkit.StartNATS(t)
	esReg := prometheus.NewRegistry()
	es := eventstore.New(n.JetStream(t), eventstore.WithSource("agentid/issuer"), eventstore.WithLogger(quiet), eventstore.WithRegisterer(esReg))
	if err := es.EnsureStreams(t.Context()); err != nil {
		t.Fatal(err)
	}
	agents := loadAgents(envInt(t, outageAgentsEnv, 20))
	registerAgents(t, es, agents)
	r := &outageRun{t: t, es: es, esReg: esReg, mon: runMonitor(t, es, cfg),
		outage: time.Duration(envInt(t, outageSecondsEnv, 10)) * time.Second}
	r.gen = newLoadGen(es, agents, envInt(t, outageRateEnv, 3000))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		r.gen.run(context.Background(), stop)
	}()
	r.stopLoad = sync.OnceFunc(func() {
		close(stop)
		<-done
	})
	t.Cleanup(r.stopLoad)
	return r
}

// waitStored waits until the consumer has acknowledged at least one event: rows are stored.
func (r *outageRun) waitStored() {
	r.t.Helper()
	testkit.Eventually(r.t, 0, "the first telemetry stored", func() (bool, error) {
		floor, _, err := position(r.t.Context(), r.es.JetStream())
		return floor > 0, err
	})
}

// holdOutage keeps the store down for the run's outage under the load (the scenario's length, not
// a wait for something to happen), and at least until the monitor has failed inserts and had the
// events redelivered.
func (r *outageRun) holdOutage(failuresBefore, redeliveriesBefore float64) {
	r.t.Helper()
	select {
	case <-time.After(r.outage):
	case <-r.t.Context().Done():
		r.t.Fatal("test ended during the outage")
	}
	testkit.Eventually(r.t, 0, "insert failures and redeliveries during the outage", func() (bool, error) {
		return r.insertFailures() > failuresBefore && r.redeliveries() > redeliveriesBefore, nil
	})
}

func (r *outageRun) insertFailures() float64 {
	return metricValue(r.t, r.mon.reg, "monitor_telemetry_insert_failures_total", "", "")
}

func (r *outageRun) redeliveries() float64 {
	return metricValue(r.t, r.esReg, "agentid_eventstore_consumer_redeliveries_total", "consumer", ingest.ConsumerName)
}

// catchUp waits until the consumer has acknowledged every event published before the store came
// back, and returns how long that took.
func (r *outageRun) catchUp(back time.Time) time.Duration {
	r.t.Helper()
	_, backlog, err := position(r.t.Context(), r.es.JetStream())
	if err != nil {
		r.t.Fatal(err)
	}
	// Redeliveries back off up to 5 minutes (eventstore.DefaultBackoff): an event that failed
	// through the whole outage may wait that long after the store is back.
	r.waitAcked(backlog, "the consumer catching up with the outage's backlog")
	return time.Since(back)
}

// drain stops the load and waits until the consumer has acknowledged everything published; it
// returns the rows published, per agent.
func (r *outageRun) drain() (int64, map[string]totals) {
	r.t.Helper()
	r.stopLoad()
	published, perAgent, err := r.gen.result()
	if err != nil {
		r.t.Fatalf("publisher: %v", err)
	}
	_, last, err := position(r.t.Context(), r.es.JetStream())
	if err != nil {
		r.t.Fatal(err)
	}
	r.waitAcked(last, "the consumer acknowledging every published event")
	return published, perAgent
}

// waitAcked waits until the consumer's ack floor reaches seq; failing, it says where it stands.
func (r *outageRun) waitAcked(seq uint64, what string) {
	r.t.Helper()
	var floor uint64
	err := testkit.Poll(r.t.Context(), r.outage+6*time.Minute, func() (bool, error) {
		f, _, err := position(r.t.Context(), r.es.JetStream())
		floor = f
		return f >= seq, err
	})
	if err != nil {
		r.t.Fatalf("waiting for %s: %v; ack floor %d of %d, %d rows published, insert failures %.0f, redeliveries %.0f",
			what, err, floor, seq, r.gen.published(), r.insertFailures(), r.redeliveries())
	}
}

// report logs the run's numbers; a measurement run (AGENTID_OUTAGE_SECONDS set) also prints them.
func (r *outageRun) report(engine string, published, stored, duplicates int64, catchUp time.Duration) {
	gen := r.gen
	gen.mu.Lock()
	msgs, pubTime := gen.messages, gen.publishing
	gen.mu.Unlock()
	line := fmt.Sprintf("%s outage %s under load: rate %d rows/s asked, published %d rows in %d events (%.1f ms per publish), stored %d, duplicates %d, "+
		"catch-up after the store came back %s, insert failures %.0f, redeliveries %.0f",
		engine, r.outage, gen.rate, published, msgs, float64(pubTime.Microseconds())/1000/float64(max(msgs, 1)), stored, duplicates,
		catchUp.Round(100*time.Millisecond), r.insertFailures(), r.redeliveries())
	r.t.Log(line)
	if os.Getenv(outageSecondsEnv) != "" {
		fmt.Println(line)
	}
}

// TestClickHouseOutageUnderLoadLosesNothing halts ClickHouse (SIGKILL, as a crash) while token
// and access telemetry is published continuously, keeps publishing through the outage, restarts
// it, and checks that the monitor stored every published event exactly once: the raw rows count
// each event id once and number the published rows, per agent with the same denials, rows and
// bytes, and agent_hourly (fed by a materialized view from every inserted row, so a copy inserted
// twice would count twice whatever the merges do) sums to the same, though three batches stored
// after the restart fail before their acknowledgement (failpoint monitor/telemetry-after-commit)
// and come again. The monitor's metrics show the failed inserts and the redeliveries it rode out.
func TestClickHouseOutageUnderLoadLosesNothing(t *testing.T) {
	ctx := context.Background()
	srv, err := clickhousedev.Start(ctx, clickhousedev.Config{})
	if err != nil {
		clickhousedev.Unavailable(t, err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	from := time.Now().UTC().Truncate(time.Hour)
	r := startOutageRun(t, app.Config{ClickHouseDSN: srv.DSN("agentid")})
	r.waitStored()

	failures, redeliveries := r.insertFailures(), r.redeliveries()
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	r.holdOutage(failures, redeliveries)
	// Once it is back, three batches are stored but not acknowledged: their events come again.
	disableAfter, err := failpoint.Enable(failpoint.TelemetryAfterCommit, "3*error")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(disableAfter)
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	catchUp := r.catchUp(time.Now())
	published, perAgent := r.drain()

	raw := chTotals(t, srv, `SELECT agent, count(), uniqExact(event_id), countIf(outcome NOT IN ('issued', 'allowed', 'allow')), sum(rows), sum(bytes)
		FROM agentid.telemetry_events WHERE kind IN ('access', 'token.requested') GROUP BY agent`)
	hourly := chTotals(t, srv, fmt.Sprintf(`SELECT agent, sum(requests), sum(requests), sum(denied), sum(rows), sum(bytes)
		FROM agentid.agent_hourly WHERE tenant = '%s' AND hour >= toDateTime(%d) GROUP BY agent`, loadTenant, from.Unix()))
	stored, unique := countsOf(raw)
	r.report("ClickHouse", published, unique, stored-unique, catchUp)
	checkExactlyOnce(t, published, perAgent, raw, hourly)
}

// TestDuckDBStoreFailuresUnderLoadLoseNothing is the outage test of the DuckDB default, which
// cannot be halted apart from the monitor: its inserts fail (failpoint
// monitor/telemetry-before-commit) for the outage under a continuous load, then three committed
// batches fail before their acknowledgement (monitor/telemetry-after-commit), so that their events
// come again though stored. Every published event is stored once, and Hourly sums to the raw rows.
func TestDuckDBStoreFailuresUnderLoadLoseNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telemetry.duckdb")
	from := time.Now().UTC().Truncate(time.Hour)
	r := startOutageRun(t, app.Config{DuckDBPath: path})
	r.waitStored()

	failures, redeliveries := r.insertFailures(), r.redeliveries()
	disable, err := failpoint.Enable(failpoint.TelemetryBeforeCommit, "error")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(disable)
	r.holdOutage(failures, redeliveries)
	disableAfter, err := failpoint.Enable(failpoint.TelemetryAfterCommit, "3*error")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(disableAfter)
	disable()
	back := time.Now()
	catchUp := r.catchUp(back)
	published, perAgent := r.drain()
	r.mon.stop()

	st, err := duckdb.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	raw := sqlTotals(t, st, `SELECT agent, count(*), count(DISTINCT event_id), count(*) FILTER (WHERE outcome NOT IN ('issued', 'allowed', 'allow')),
		sum("rows"), sum("bytes") FROM telemetry_events WHERE kind IN ('access', 'token.requested') GROUP BY agent`)
	hours, err := st.Hourly(context.Background(), store.Window{Tenant: loadTenant, From: from, To: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	hourly := map[string]rowCounts{}
	for _, h := range hours {
		c := hourly[h.Agent]
		c.rows, c.unique = c.rows+h.Requests, c.unique+h.Requests
		c.sums.add(totals{Requests: h.Requests, Denied: h.Denied, Rows: h.Rows, Bytes: h.Bytes})
		hourly[h.Agent] = c
	}
	stored, unique := countsOf(raw)
	r.report("DuckDB", published, unique, stored-unique, catchUp)
	checkExactlyOnce(t, published, perAgent, raw, hourly)
}

// rowCounts are one agent's stored request rows: rows, distinct event ids, and their sums.
type rowCounts struct {
	rows, unique int64
	sums         totals
}

func countsOf(m map[string]rowCounts) (rows, unique int64) {
	for _, c := range m {
		rows, unique = rows+c.rows, unique+c.unique
	}
	return rows, unique
}

// checkExactlyOnce compares what was published with the raw rows and the hourly aggregate.
func checkExactlyOnce(t *testing.T, published int64, perAgent map[string]totals, raw, hourly map[string]rowCounts) {
	t.Helper()
	if all := sumTotals(perAgent); all.Requests != published {
		t.Fatalf("publisher counted %d rows per agent, %d in all", all.Requests, published)
	}
	rows, unique := countsOf(raw)
	if rows != published || unique != published {
		t.Errorf("stored %d raw rows with %d distinct event ids; published %d: %d lost, %d duplicates",
			rows, unique, published, published-unique, rows-unique)
	}
	agents := slices.Sorted(func(yield func(string) bool) {
		for a := range perAgent {
			if !yield(a) {
				return
			}
		}
	})
	for _, a := range agents {
		want := perAgent[a]
		if got := raw[a]; got.rows != want.Requests || got.unique != want.Requests || got.sums != want {
			t.Errorf("raw rows of %s: %d rows, %d ids, sums %+v; published %+v", a, got.rows, got.unique, got.sums, want)
		}
		if got := hourly[a]; got.sums != want {
			t.Errorf("hourly aggregate of %s: %+v; published %+v", a, got.sums, want)
		}
	}
	for _, m := range []map[string]rowCounts{raw, hourly} {
		for a := range m {
			if _, ok := perAgent[a]; !ok {
				t.Errorf("rows of an agent nobody published for: %q", a)
			}
		}
	}
}

// chTotals runs a query returning agent, rows, distinct ids, denied, rows sum and bytes sum.
func chTotals(t *testing.T, srv *clickhousedev.Server, query string) map[string]rowCounts {
	t.Helper()
	out, err := srv.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]rowCounts{}
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if len(f) != 6 {
			t.Fatalf("row %q of %q: want 6 columns", line, query)
		}
		var n [5]int64
		for i := range n {
			if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				t.Fatalf("row %q: %v", line, err)
			}
		}
		m[f[0]] = rowCounts{rows: n[0], unique: n[1], sums: totals{Requests: n[0], Denied: n[2], Rows: n[3], Bytes: n[4]}}
	}
	return m
}

// sqlTotals is chTotals on the DuckDB store.
func sqlTotals(t *testing.T, st *duckdb.Store, query string) map[string]rowCounts {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]rowCounts{}
	for rows.Next() {
		var (
			agent string
			n     [5]int64
		)
		if err := rows.Scan(&agent, &n[0], &n[1], &n[2], &n[3], &n[4]); err != nil {
			t.Fatal(err)
		}
		m[agent] = rowCounts{rows: n[0], unique: n[1], sums: totals{Requests: n[0], Denied: n[2], Rows: n[3], Bytes: n[4]}}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// metricValue is the value of counter name in reg with label = value (every series when label is
// empty, summed).
func metricValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
