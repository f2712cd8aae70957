package e2e_test

// The fault-injection suite: `agentid dev` is killed (SIGKILL, as `kill -9`) at every failpoint of
// pkg/failpoint and started again on the same data directory; its engines are restarted under it.
// After every scenario the invariants of faultInvariants.check must hold. docs/faults.md lists the
// scenarios and what each proves; `make test-faults` adds the long ones (build tag faults).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/pkg/failpoint"
	"github.com/agentid/agentid/pkg/natsauth"
	"github.com/agentid/agentid/pkg/testkit"
	issuerv1 "github.com/agentid/agentid/proto/gen/go/agentid/issuer/v1"
	lifecyclev1 "github.com/agentid/agentid/proto/gen/go/agentid/lifecycle/v1"
	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// faultReconcileInterval is the lifecycle reconciler's period in the fault scenarios: short, so that
// what a kill left undone is redone within the invariants' deadline.
const faultReconcileInterval = "1s"

// faultEnv is one data directory and set of ports on which `agentid dev` is started, killed and
// started again.
type faultEnv struct {
	t       *testing.T
	bin     string
	dataDir string
	ports   []int
	extra   []string // flags added to every start
	natsURL string   // an external NATS server (--nats-url), if any
	p       *platform
}

func newFaultEnv(t *testing.T, bin string, extra ...string) *faultEnv {
	return &faultEnv{t: t, bin: bin, dataDir: t.TempDir(), ports: freePorts(t, 5), extra: extra}
}

// start runs `agentid dev` with the given environment (failpoints) and waits until it is ready.
func (e *faultEnv) start(env ...string) *platform {
	e.t.Helper()
	e.waitPortsFree()
	args := append([]string{"--reconcile-interval", faultReconcileInterval}, e.extra...)
	e.p = rememberDevNATS(&platform{testkit.StartDevWith(e.t, e.bin, e.dataDir, testkit.DevOptions{Ports: e.ports, Env: env, Args: args})})
	return e.p
}

// waitPortsFree waits until the ports of a killed process (and of its Temporal child, which stops on
// its parent's death) accept no connections any more.
func (e *faultEnv) waitPortsFree() {
	e.t.Helper()
	testkit.Eventually(e.t, 0, "the previous process's ports to be free", func() (bool, error) {
		for _, port := range e.ports {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err == nil {
				_ = c.Close()
				return false, fmt.Errorf("port %d still accepts connections", port)
			}
		}
		return true, nil
	})
}

// admin connects to the running platform as the bootstrap admin.
func (e *faultEnv) admin(ctx context.Context) *grpc.ClientConn {
	e.t.Helper()
	cred, key := readCredential(e.t, e.dataDir+"/credentials/bootstrap-admin.json")
	var conn *grpc.ClientConn
	testkit.Eventually(e.t, 0, "a bootstrap admin token", func() (bool, error) {
		tok, err := clientCredentials(e.t, key, cred.ClientID, cred.Issuer).Token(ctx)
		if err != nil {
			return false, err
		}
		conn = e.p.dial(e.t, tok.AccessToken)
		return true, nil
	})
	return conn
}

// faultWorkload is what a user does while a fault strikes: register an agent, let it be provisioned,
// use its credential, register and retire a second one. Every step is idempotent (request ids), so
// after a crash the same workload is resumed from the start and completes what the crash interrupted.
type faultWorkload struct {
	name   string
	keyA   agentKey
	keyB   agentKey
	jwks   map[string]string // "a", "b" → public JWK Set
	agents map[string]string // acknowledged registrations: request id → agent name
	tokens int               // tokens the issuer answered with (acknowledged)
	// after, if set, is called after each step with its name ("active-a", "tokens-a", ...): where a
	// scenario breaks an engine in the middle of the workload.
	after func(step string)
}

// step reports a finished step to w.after.
func (w *faultWorkload) step(name string) {
	if w.after != nil {
		w.after(name)
	}
}

func newFaultWorkload(t *testing.T, name string) *faultWorkload {
	w := &faultWorkload{name: name, keyA: newAgentKey(t), keyB: newAgentKey(t), agents: map[string]string{}}
	w.jwks = map[string]string{"a": w.keyA.publicJWKS(t), "b": w.keyB.publicJWKS(t)}
	return w
}

// errProcessExited ends a workload step whose platform died under it.
var errProcessExited = errors.New("the platform process exited")

// run drives the workload against p until it completes or fails; a failure after the process died
// is errProcessExited.
func (w *faultWorkload) run(ctx context.Context, t *testing.T, e faultTarget) (err error) {
	defer func() {
		select {
		case <-e.exited:
			if err != nil {
				err = fmt.Errorf("%w (%v)", errProcessExited, err)
			}
		default:
		}
	}()
	registry := registryv1.NewRegistryServiceClient(e.registry)
	nameA, err := w.register(ctx, e, registry, "a")
	if err != nil {
		return err
	}
	if err := w.waitState(ctx, e, registry, nameA, registryv1.AgentState_AGENT_STATE_ACTIVE); err != nil {
		return err
	}
	w.step("active-a")
	idA := nameA[strings.LastIndex(nameA, "/")+1:]
	monitor := monitorv1.NewMonitorServiceClient(e.monitor)
	var rowsBefore int
	if err := poll(ctx, e, func() (bool, error) {
		n, err := issuedRows(ctx, monitor, nameA)
		rowsBefore = n
		return err == nil, err
	}); err != nil {
		return fmt.Errorf("telemetry of %s: %w", nameA, err)
	}
	issuedNow := 0
	for range 3 {
		if err := retrying(ctx, e, func() error {
			_, err := clientCredentials(t, w.keyA.private, idA, e.issuerURL).Token(ctx)
			return err
		}); err != nil {
			return fmt.Errorf("token for %s: %w", nameA, err)
		}
		w.tokens++
		issuedNow++
	}
	w.step("tokens-a")
	// The telemetry of these tokens is stored before the workload goes on (the monitor's failpoints
	// strike here).
	if err := poll(ctx, e, func() (bool, error) {
		n, err := issuedRows(ctx, monitor, nameA)
		return n >= rowsBefore+issuedNow, err
	}); err != nil {
		return fmt.Errorf("telemetry of %s: %w", nameA, err)
	}
	nameB, err := w.register(ctx, e, registry, "b")
	if err != nil {
		return err
	}
	if err := w.waitState(ctx, e, registry, nameB, registryv1.AgentState_AGENT_STATE_ACTIVE); err != nil {
		return err
	}
	w.step("active-b")
	if err := retrying(ctx, e, func() error {
		_, err := registry.RetireAgent(ctx, &registryv1.RetireAgentRequest{
			Name: nameB, Reason: "fault scenario " + w.name, RequestId: w.name + "-retire-b",
		})
		return err
	}); err != nil {
		return fmt.Errorf("retire %s: %w", nameB, err)
	}
	return w.waitState(ctx, e, registry, nameB, registryv1.AgentState_AGENT_STATE_RETIRED)
}

func (w *faultWorkload) register(ctx context.Context, e faultTarget, registry registryv1.RegistryServiceClient, which string) (string, error) {
	reqID := w.name + "-register-" + which
	var res *registryv1.RegisterAgentResponse
	err := retrying(ctx, e, func() (err error) {
		res, err = registry.RegisterAgent(ctx, &registryv1.RegisterAgentRequest{
			Parent: "tenants/default",
			Agent: &registryv1.Agent{
				DisplayName: w.name + " " + which, Owner: "team:faults", Sponsor: "team:platform", Purpose: "survives faults",
				Environment: registryv1.Environment_ENVIRONMENT_DEV, Autonomy: registryv1.Autonomy_AUTONOMY_ASSISTIVE,
				IdentityModel: registryv1.IdentityModel_IDENTITY_MODEL_AUTONOMOUS, TrustBoundary: registryv1.TrustBoundary_TRUST_BOUNDARY_INTERNAL,
				DataSensitivity: registryv1.DataSensitivity_DATA_SENSITIVITY_INTERNAL, Scopes: []string{"faq.read"},
				PublicJwks: w.jwks[which],
			},
			RequestId: reqID,
		})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("register %s: %w", reqID, err)
	}
	w.agents[reqID] = res.GetAgent().GetName()
	return res.GetAgent().GetName(), nil
}

func (w *faultWorkload) waitState(ctx context.Context, e faultTarget, registry registryv1.RegistryServiceClient, name string, want registryv1.AgentState) error {
	var last registryv1.AgentState
	err := poll(ctx, e, func() (bool, error) {
		got, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name})
		if err != nil {
			return false, err
		}
		last = got.GetAgent().GetState()
		return last == want, nil
	})
	if err != nil {
		return fmt.Errorf("%s to be %s (is %s): %w", name, want, last, err)
	}
	return nil
}

// faultWait bounds each wait of a fault workload. A wait may span an engine's outage and its restart
// (a Temporal dev server's start, an event redelivered after its back-off, an activity retried after
// its start-to-close timeout) on cores shared with other test packages: it is generous, never a
// measure of speed.
const faultWait = 5 * time.Minute

// poll checks cond until it holds, the process exits (errProcessExited at once), or faultWait
// passes.
func poll(ctx context.Context, e faultTarget, cond func() (bool, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if e.exited != nil {
		go func() {
			select {
			case <-e.exited:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	err := testkit.Poll(ctx, faultWait, cond)
	select {
	case <-e.exited:
		return errProcessExited
	default:
		return err
	}
}

// issuedRows counts the telemetry rows of tokens issued to one agent (every page).
func issuedRows(ctx context.Context, monitor monitorv1.MonitorServiceClient, agent string) (int, error) {
	rows, err := telemetryRows(ctx, monitor, agent)
	n := 0
	for _, r := range rows {
		if r.GetOutcome() == "issued" {
			n++
		}
	}
	return n, err
}

// retrying calls f until it succeeds (a retry is safe: every call carries its request id), the
// process exits, or faultWait passes; engines that restart under the platform make calls
// fail for a while.
func retrying(ctx context.Context, e faultTarget, f func() error) error {
	return poll(ctx, e, func() (bool, error) {
		err := f()
		return err == nil, err
	})
}

// telemetryRows lists the token telemetry rows of one agent, or of every agent when agent is empty.
func telemetryRows(ctx context.Context, monitor monitorv1.MonitorServiceClient, agent string) ([]*monitorv1.TelemetryEvent, error) {
	var rows []*monitorv1.TelemetryEvent
	token := ""
	for {
		res, err := monitor.ListTelemetryEvents(ctx, &monitorv1.ListTelemetryEventsRequest{
			Parent: "tenants/default", Agent: agent, Kind: "token.requested", PageSize: 1000, PageToken: token,
		})
		if err != nil {
			return nil, err
		}
		rows = append(rows, res.GetEvents()...)
		if token = res.GetNextPageToken(); token == "" {
			return rows, nil
		}
	}
}

// faultTarget is where the invariants are checked: the platform's NATS server and a gRPC connection
// (with an admin token) to each service; in `agentid dev` all four are one address.
type faultTarget struct {
	natsURL string
	// issuerURL is the issuer identifier of tenant default.
	issuerURL                            string
	registry, issuer, lifecycle, monitor *grpc.ClientConn
	// exited is closed when the platform died under the workload (nil: it never dies as a whole).
	exited <-chan struct{}
}

// target is the running platform of e as a faultTarget.
func (e *faultEnv) target(ctx context.Context) faultTarget {
	conn := e.admin(ctx)
	natsURL := e.p.NATSURL
	if e.natsURL != "" {
		natsURL = e.natsURL
	}
	return faultTarget{natsURL: natsURL, issuerURL: e.p.issuer("default"), registry: conn, issuer: conn,
		lifecycle: conn, monitor: conn, exited: e.p.Exited()}
}

// faultInvariants are the properties every scenario must leave intact. snapshot records what was
// acknowledged before a fault; check verifies after the platform recovered.
type faultInvariants struct {
	lastSeq  map[string]uint64 // stream → last sequence acknowledged before the fault
	replicas map[string]int    // stream → replica count before the fault
}

// snapshot reads the streams of the platform's NATS server at url.
func snapshotStreams(t *testing.T, ctx context.Context, url string) *faultInvariants {
	t.Helper()
	inv := &faultInvariants{lastSeq: map[string]uint64{}, replicas: map[string]int{}}
	js := natsJS(t, url)
	for name := range js.StreamNames(ctx).Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		inv.lastSeq[name] = s.CachedInfo().State.LastSeq
		inv.replicas[name] = s.CachedInfo().Config.Replicas
	}
	if len(inv.lastSeq) == 0 {
		t.Fatal("the platform's NATS server has no streams")
	}
	return inv
}

// tokenRecordsInStream counts the token request records stored on subject: a token.requested
// event is one record, a token.requested.batch event as many as it holds.
func tokenRecordsInStream(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, subject string) (uint64, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	var msgs uint64
	for _, n := range info.State.Subjects {
		msgs += n
	}
	if msgs == 0 {
		return 0, nil
	}
	c, err := pollingConsumer(ctx, js, eventstore.StreamTelemetry, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return 0, err
	}
	var records, seen uint64
	for seen < msgs {
		batch, err := c.Fetch(int(min(msgs-seen, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			seen++
			e, err := eventstore.EventFromMsg(m)
			if err != nil {
				return 0, err
			}
			switch e.Type {
			case "token.requested.batch":
				b, err := eventstore.DecodeAs[*issuerv1.TokenRequestedBatch](e)
				if err != nil {
					return 0, err
				}
				records += uint64(len(b.GetRequests()))
			default:
				records++
			}
		}
		if err := batch.Error(); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, fmt.Errorf("telemetry: %d of %d messages on %s read", seen, msgs, subject)
		}
	}
	return records, nil
}

func natsJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append(natsOptions(t, url, natsauth.Admin), nats.Name("agentid fault invariants"))...)
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// check verifies, on the recovered platform, that
//   - no acknowledged event is lost: every stream holds at least what it held before the fault, and
//     every acknowledged registration exists, exactly once;
//   - stream replica counts are unchanged;
//   - no agent that is not ACTIVE has an ACTIVE client (once the platform is quiet);
//   - every PENDING or RETIRING agent has a lifecycle run (not merely a queued one);
//   - every token telemetry event in the TELEMETRY stream is one row in the telemetry store: none
//     lost, none twice; and in scenarios that never kill the issuer, every issued token has its row.
func (inv *faultInvariants) check(t *testing.T, ctx context.Context, tg faultTarget, w *faultWorkload, issuerKilled bool, telemetryDrops int) {
	t.Helper()
	after := snapshotStreams(t, ctx, tg.natsURL)
	for name, seq := range inv.lastSeq {
		if after.lastSeq[name] < seq {
			t.Errorf("invariant: stream %s lost acknowledged events: last sequence %d, was %d before the fault", name, after.lastSeq[name], seq)
		}
		if after.replicas[name] != inv.replicas[name] {
			t.Errorf("invariant: stream %s has %d replicas, had %d", name, after.replicas[name], inv.replicas[name])
		}
	}

	registry := registryv1.NewRegistryServiceClient(tg.registry)
	var agents []*registryv1.Agent
	pageToken := ""
	for {
		res, err := registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/default", PageSize: 1000, PageToken: pageToken})
		if err != nil {
			t.Fatalf("list agents: %v", err)
		}
		agents = append(agents, res.GetAgents()...)
		if pageToken = res.GetNextPageToken(); pageToken == "" {
			break
		}
	}
	byDisplay := map[string]int{}
	for _, a := range agents {
		byDisplay[a.GetDisplayName()]++
	}
	for reqID, name := range w.agents {
		if _, err := registry.GetAgent(ctx, &registryv1.GetAgentRequest{Name: name}); err != nil {
			t.Errorf("invariant: acknowledged registration %s (%s) is lost: %v", reqID, name, err)
		}
	}
	for _, which := range []string{"a", "b"} {
		if n := byDisplay[w.name+" "+which]; n != 1 {
			t.Errorf("invariant: %d agents named %q, want exactly 1", n, w.name+" "+which)
		}
	}

	issuer := issuerv1.NewIssuerServiceClient(tg.issuer)
	testkit.Eventually(t, 0, "no ACTIVE client for an agent that is not ACTIVE", func() (bool, error) {
		res, err := registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/default", PageSize: 1000})
		if err != nil {
			return false, err
		}
		for _, a := range res.GetAgents() {
			if a.GetState() == registryv1.AgentState_AGENT_STATE_ACTIVE {
				continue
			}
			c, err := issuer.GetClient(ctx, &issuerv1.GetClientRequest{Name: "tenants/default/clients/" + a.GetAgentId()})
			if status.Code(err) == codes.NotFound {
				continue
			}
			if err != nil {
				return false, err
			}
			if c.GetClient().GetState() == issuerv1.ClientState_CLIENT_STATE_ACTIVE {
				return false, fmt.Errorf("agent %s is %s and its client is ACTIVE", a.GetName(), a.GetState())
			}
		}
		return true, nil
	})

	lifecycle := lifecyclev1.NewLifecycleServiceClient(tg.lifecycle)
	testkit.Eventually(t, 0, "a lifecycle run for every PENDING or RETIRING agent", func() (bool, error) {
		res, err := registry.ListAgents(ctx, &registryv1.ListAgentsRequest{Parent: "tenants/default", PageSize: 1000})
		if err != nil {
			return false, err
		}
		for _, a := range res.GetAgents() {
			if st := a.GetState(); st != registryv1.AgentState_AGENT_STATE_PENDING && st != registryv1.AgentState_AGENT_STATE_RETIRING {
				continue
			}
			ws, err := lifecycle.GetAgentWorkflows(ctx, &lifecyclev1.GetAgentWorkflowsRequest{Agent: a.GetName()})
			if err != nil {
				return false, fmt.Errorf("workflows of %s: %w", a.GetName(), err)
			}
			started := false
			for _, r := range ws.GetWorkflows() {
				started = started || r.GetStage() != "queued"
			}
			if !started {
				return false, fmt.Errorf("agent %s is %s and has no run", a.GetName(), a.GetState())
			}
		}
		return true, nil
	})

	// Telemetry: the stream → store leg is exact; the issuer → stream leg is exact unless the issuer
	// itself was killed (its publish buffer dies with it, by design: a token request never waits for
	// telemetry), in which case the store may hold fewer rows than tokens were issued, never more.
	js := natsJS(t, tg.natsURL)
	monitor := monitorv1.NewMonitorServiceClient(tg.monitor)
	var inStream uint64
	testkit.Eventually(t, 0, "every token telemetry event in the stream to be one row in the store", func() (bool, error) {
		s, err := js.Stream(ctx, eventstore.StreamTelemetry)
		if err != nil {
			return false, err
		}
		if inStream, err = tokenRecordsInStream(ctx, js, s, "telemetry.default.token.requested"); err != nil {
			return false, err
		}
		rows, err := telemetryRows(ctx, monitor, "")
		if err != nil {
			return false, err
		}
		seen := map[string]bool{}
		for _, r := range rows {
			if seen[r.GetEventId()] {
				t.Fatalf("invariant: telemetry event %s stored twice", r.GetEventId())
			}
			seen[r.GetEventId()] = true
		}
		return uint64(len(rows)) == inStream, fmt.Errorf("%d rows for %d telemetry events in the stream", len(rows), inStream)
	})
	rows, err := telemetryRows(ctx, monitor, w.agents[w.name+"-register-a"])
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, r := range rows {
		if r.GetOutcome() == "issued" {
			issued++
		}
	}
	switch {
	case issued > w.tokens:
		t.Errorf("invariant: %d issued-token telemetry rows for agent a, but only %d tokens were issued to it", issued, w.tokens)
	case !issuerKilled && issued != w.tokens-telemetryDrops:
		t.Errorf("invariant: %d issued-token telemetry rows for agent a, want %d issued tokens minus %d counted drops", issued, w.tokens, telemetryDrops)
	}
	rowsA := issued
	t.Logf("invariants hold: %d streams, %d agents, %d token telemetry events = rows, agent a: %d tokens, %d rows",
		len(after.lastSeq), len(agents), inStream, w.tokens, rowsA)
}

// killedBySIGKILL reports whether a process ended by SIGKILL.
func killedBySIGKILL(st *os.ProcessState) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestFaultKillAtEachFailpoint kills `agentid dev` at every failpoint on the way of a registration, a
// provisioning run, token telemetry and a retirement, restarts it on the same data directory, resumes
// the workload with the same request ids, and checks the invariants.
func TestFaultKillAtEachFailpoint(t *testing.T) {
	agentidBin, _ := buildBinaries(t)
	e := newFaultEnv(t, agentidBin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// First start: bootstrap (tenants, signing keys, the admin) without faults, so that the first
	// failpoint hit of each scenario belongs to its workload.
	e.start()
	e.p.Stop(t)

	for _, seam := range []string{
		failpoint.AppendBeforeReply,
		failpoint.WorkflowBeforeStart,
		failpoint.WorkflowAfterStart,
		failpoint.CreateClientBeforeUndo,
		failpoint.TelemetryBeforeCommit,
		failpoint.TelemetryAfterCommit,
	} {
		t.Run(strings.ReplaceAll(seam, "/", "_"), func(t *testing.T) {
			e.t = t
			name := "kill-" + strings.ReplaceAll(seam, "/", "-")
			w := newFaultWorkload(t, name)
			e.start(failpoint.Env + "=" + seam + "=1*exit")
			before := snapshotStreams(t, ctx, e.p.NATSURL)
			err := w.run(ctx, t, e.target(ctx))
			if err == nil {
				t.Fatalf("the workload completed: failpoint %s never fired", seam)
			}
			if !errors.Is(err, errProcessExited) {
				t.Fatalf("the workload failed before the process died: %v\n%s", err, e.p.Output())
			}
			if st := e.p.WaitExit(t, time.Minute); !killedBySIGKILL(st) {
				t.Fatalf("the process ended with %v, want SIGKILL from failpoint %s", st, seam)
			}
			if !strings.Contains(e.p.Output(), "failpoint "+seam) {
				t.Fatalf("the process died, but not at failpoint %s:\n%s", seam, e.p.Output())
			}
			t.Logf("killed at %s during: %v", seam, err)

			e.start()
			if err := w.run(ctx, t, e.target(ctx)); err != nil {
				t.Fatalf("the resumed workload failed: %v\n%s", err, e.p.Output())
			}
			before.check(t, ctx, e.target(ctx), w, true, 0)
			e.p.Stop(t)
		})
	}
}
