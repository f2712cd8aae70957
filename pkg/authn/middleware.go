package authn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentid/agentid/pkg/errs"
)

// Reason codes of requests refused before their token was verified.
const (
	// ReasonTokenInQuery means the request carried an access token in its query string (RFC 6750 §2.3),
	// which is refused: such tokens end up in logs and browser histories.
	ReasonTokenInQuery = "TOKEN_IN_QUERY"
	// ReasonTokenScheme means the Authorization header was not one "Bearer <token>" or "DPoP <token>".
	ReasonTokenScheme = "TOKEN_SCHEME"
	// ReasonVerifierMissing (kind Unavailable) means the server was built without a Verifier.
	ReasonVerifierMissing = "VERIFIER_MISSING"
)

// ServerOption configures Middleware and the gRPC server interceptors.
type ServerOption func(*serverOptions)

type serverOptions struct {
	tenants       []string
	scopes        []string
	methodScopes  map[string][]string
	recorder      AccessRecorder
	logger        *slog.Logger
	realm         string
	replay        DPoPReplayCache
	publicURL     *url.URL
	audience      string
	publicMethods map[string]bool
	dpopMethods   map[string]bool
	resource      func(*http.Request) string
	dpopMaxAge    time.Duration
	now           func() time.Time
}

func newServerOptions(opts []ServerOption) *serverOptions {
	o := &serverOptions{now: time.Now, dpopMaxAge: DefaultDPoPMaxAge}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.replay == nil {
		m := NewMemoryDPoPReplayCache(0)
		m.now = o.now
		o.replay = m
	}
	return o
}

// WithAllowedTenants accepts only tokens of the given tenants (default: every tenant the verifier
// accepts). A token of another tenant is refused as invalid_token (ReasonTenantNotAllowed).
func WithAllowedTenants(tenants ...string) ServerOption {
	return func(o *serverOptions) { o.tenants = slices.Clone(tenants) }
}

// WithRequiredScopes requires every request to carry all of scopes (403 insufficient_scope, gRPC
// PermissionDenied). Per-route scopes: RequireScopes for net/http, WithMethodScopes for gRPC.
func WithRequiredScopes(scopes ...string) ServerOption {
	return func(o *serverOptions) { o.scopes = slices.Clone(scopes) }
}

// WithAccessRecorder sends every access decision to r (an *AccessReporter, or a test sink).
func WithAccessRecorder(r AccessRecorder) ServerOption {
	return func(o *serverOptions) { o.recorder = r }
}

// WithServerLogger logs refusals (at debug level; at warn when verification is unavailable) to l;
// default slog.Default().
func WithServerLogger(l *slog.Logger) ServerOption {
	return func(o *serverOptions) { o.logger = l }
}

// WithRealm sets the realm of the Bearer challenge (RFC 6750 §3).
func WithRealm(realm string) ServerOption {
	return func(o *serverOptions) { o.realm = realm }
}

// WithDPoPReplayCache makes DPoP proofs single-use through c (default: an in-memory cache of
// DefaultDPoPReplayEntries proofs, a tenth of them at most of one key; pass a shared cache when the
// resource server runs replicated).
func WithDPoPReplayCache(c DPoPReplayCache) ServerOption {
	return func(o *serverOptions) {
		if c != nil {
			o.replay = c
		}
	}
}

// WithDPoPMaxAge sets how old a DPoP proof's iat may be (default DefaultDPoPMaxAge).
func WithDPoPMaxAge(d time.Duration) ServerOption {
	return func(o *serverOptions) {
		if d > 0 {
			o.dpopMaxAge = d
		}
	}
}

// WithPublicURL sets the scheme and host clients use to reach this server (e.g.
// https://files.example), against which a DPoP proof's htu is checked; needed behind a reverse proxy
// or TLS terminator. Default: the request's Host, https when the connection is TLS.
func WithPublicURL(u string) ServerOption {
	return func(o *serverOptions) {
		if p, err := url.Parse(u); err == nil && p.Scheme != "" && p.Host != "" {
			o.publicURL = p
		}
	}
}

// WithReportedAudience names the audience this server verifies tokens for, in access telemetry
// (default: the token's audience when it has exactly one).
func WithReportedAudience(aud string) ServerOption {
	return func(o *serverOptions) { o.audience = aud }
}

// WithResourceName names the resource of an HTTP request in access telemetry (default: its path).
func WithResourceName(f func(*http.Request) string) ServerOption {
	return func(o *serverOptions) { o.resource = f }
}

// WithServerClock sets the time source (default time.Now), for tests.
func WithServerClock(now func() time.Time) ServerOption {
	return func(o *serverOptions) {
		if now != nil {
			o.now = now
		}
	}
}

// refusal is how a request is refused: the HTTP status, the OAuth error code of the challenge (""
// for none, when the request carried no credentials), the reason code for logs and telemetry.
type refusal struct {
	status int
	code   string
	reason string
	scope  string
	dpop   bool
	cause  error
}

// refusalOf maps a verification error to a refusal: Unavailable is 503, everything else 401
// invalid_token with the error's reason.
func refusalOf(err error, dpop bool) refusal {
	e := errs.FromStatus(err)
	if e.Kind == errs.KindUnavailable {
		return refusal{status: http.StatusServiceUnavailable, reason: e.Reason, cause: err, dpop: dpop}
	}
	reason := e.Reason
	if reason == "" || reason == errs.KindInternal.String() {
		reason = ReasonTokenInvalid
	}
	return refusal{status: http.StatusUnauthorized, code: "invalid_token", reason: reason, cause: err, dpop: dpop}
}

var dpopAlgsChallenge = `algs="` + strings.Join(DPoPAlgorithms(), " ") + `"`

// writeRefusal answers a refused request: a challenge (RFC 6750 §3, RFC 9449 §7.1) and a JSON body
// naming only the OAuth error code, never why.
func writeRefusal(w http.ResponseWriter, o *serverOptions, rf refusal) {
	h := w.Header()
	realm := ""
	if o != nil && o.realm != "" {
		realm = `realm="` + strings.ReplaceAll(o.realm, `"`, `'`) + `"`
	}
	code := rf.code
	switch {
	case rf.status == http.StatusServiceUnavailable:
		code = "temporarily_unavailable"
		h.Set("Retry-After", "1")
	case code == "":
		h.Add("WWW-Authenticate", joinChallenge("Bearer", realm))
		h.Add("WWW-Authenticate", joinChallenge("DPoP", dpopAlgsChallenge))
	default:
		params := []string{`error="` + code + `"`}
		if rf.scope != "" {
			params = append(params, `scope="`+rf.scope+`"`)
		}
		if rf.dpop || code == "invalid_dpop_proof" {
			h.Add("WWW-Authenticate", joinChallenge("DPoP", append(params, dpopAlgsChallenge)...))
		} else {
			h.Add("WWW-Authenticate", joinChallenge("Bearer", append([]string{realm}, params...)...))
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(rf.status)
	if code == "" {
		code = "unauthorized"
	}
	_, _ = w.Write([]byte(`{"error":"` + code + `"}`))
}

func joinChallenge(scheme string, params ...string) string {
	var b strings.Builder
	b.WriteString(scheme)
	sep := " "
	for _, p := range params {
		if p == "" {
			continue
		}
		b.WriteString(sep)
		b.WriteString(p)
		sep = ", "
	}
	return b.String()
}

// requestState is what Middleware and the interceptors know about one request, for its access event.
type requestState struct {
	o       *serverOptions
	start   time.Time
	claims  *Claims
	binding string
	dpop    bool // challenges use the DPoP scheme
	reason  string
	refused bool

	rows  atomic.Int64
	bytes atomic.Int64

	mu       sync.Mutex
	resource string
	action   string
}

type stateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// refuse records the refusal and answers it.
func (st *requestState) refuse(w http.ResponseWriter, rf refusal) {
	st.note(rf)
	rf.dpop = rf.dpop || st.dpop
	writeRefusal(w, st.o, rf)
}

// note records a refusal's reason and logs it.
func (st *requestState) note(rf refusal) {
	st.refused, st.reason = true, rf.reason
	level := slog.LevelDebug
	if rf.status == http.StatusServiceUnavailable {
		level = slog.LevelWarn
	}
	if st.o.logger.Enabled(context.Background(), level) {
		attrs := []any{"reason", rf.reason, "status", rf.status}
		if rf.cause != nil {
			attrs = append(attrs, "cause", rf.cause.Error())
		}
		if st.claims != nil {
			attrs = append(attrs, "tenant", st.claims.Tenant, "client_id", st.claims.ClientID, "jti", st.claims.ID)
		}
		st.o.logger.Log(context.Background(), level, "access refused", attrs...)
	}
}

// AccessReport lets a handler add to the access event of its request: rows returned, bytes sent
// outside the ResponseWriter, a more precise resource or action. Its methods do nothing on a nil
// report (a request that did not pass through Middleware or the interceptors), and are safe for
// concurrent use.
type AccessReport struct{ st *requestState }

// Report returns the access report of the request of ctx.
func Report(ctx context.Context) *AccessReport {
	st := stateFrom(ctx)
	if st == nil {
		return nil
	}
	return &AccessReport{st: st}
}

// AddRows adds n rows or records returned to the request's access event.
func (r *AccessReport) AddRows(n int64) {
	if r != nil {
		r.st.rows.Add(n)
	}
}

// AddBytes adds n bytes sent to the request's access event, beyond what the ResponseWriter counted.
func (r *AccessReport) AddBytes(n int64) {
	if r != nil {
		r.st.bytes.Add(n)
	}
}

// SetResource names the resource accessed (default: the URL path or gRPC method).
func (r *AccessReport) SetResource(resource string) {
	if r != nil {
		r.st.mu.Lock()
		r.st.resource = resource
		r.st.mu.Unlock()
	}
}

// SetAction names the action (default: the HTTP method, or unary/stream for gRPC).
func (r *AccessReport) SetAction(action string) {
	if r != nil {
		r.st.mu.Lock()
		r.st.action = action
		r.st.mu.Unlock()
	}
}

// event builds the access event of a finished request.
func (st *requestState) event(resource, action string, status int, bytes int64, source, requestID, traceparent string) AccessEvent {
	ev := AccessEvent{
		Time:          st.start,
		Allowed:       !st.refused,
		Reason:        st.reason,
		Status:        status,
		ResponseBytes: bytes + st.bytes.Load(),
		Rows:          st.rows.Load(),
		Latency:       st.o.now().Sub(st.start),
		RequestID:     cleanRequestID(requestID),
		TraceID:       traceIDOf(traceparent),
		SourceAddress: source,
		Binding:       st.binding,
		Audience:      st.o.audience,
		Resource:      resource,
		Action:        action,
	}
	st.mu.Lock()
	if st.resource != "" {
		ev.Resource = st.resource
	}
	if st.action != "" {
		ev.Action = st.action
	}
	st.mu.Unlock()
	if c := st.claims; c != nil {
		ev.Tenant, ev.Agent, ev.ClientID, ev.Subject = c.Tenant, c.Agent, c.ClientID, c.Subject
		ev.Environment, ev.TokenID, ev.Scopes = c.Environment, c.ID, strings.Fields(c.Scope)
		if actor, ok := c.Act["sub"].(string); ok && actor != "" {
			ev.OnBehalfOf = c.Subject
		}
		if ev.Audience == "" && len(c.Audience) == 1 {
			ev.Audience = c.Audience[0]
		}
	}
	return ev
}

// cleanRequestID keeps a request id of 1-128 printable ASCII characters without spaces.
func cleanRequestID(id string) string {
	if len(id) > 128 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return ""
		}
	}
	return id
}

// traceIDOf returns the trace id of a W3C traceparent header ("00-<32 hex>-<16 hex>-<2 hex>").
func traceIDOf(traceparent string) string {
	parts := strings.Split(strings.TrimSpace(traceparent), "-")
	if len(parts) < 4 || len(parts[1]) != 32 || parts[1] == "00000000000000000000000000000000" {
		return ""
	}
	for _, c := range parts[1] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return parts[1]
}

// Middleware returns net/http middleware that authenticates every request with v (a JWKSVerifier
// with the resource server's URL as audience and the push Denylist, or an IntrospectionVerifier):
//
//   - the token comes from one "Authorization: Bearer <token>" or "DPoP <token>" header (RFC 6750
//     §2.1, RFC 9449 §7.1); a token in the query string is refused (400 invalid_request);
//   - a DPoP-bound token (cnf.jkt) needs the DPoP scheme and a valid, unused proof for this request
//     (htm, htu, ath, iat, key); a certificate-bound token (cnf x5t#S256) needs the TLS client
//     certificate it is bound to;
//   - the token's tenant must be allowed (WithAllowedTenants) and its scopes must cover
//     WithRequiredScopes (per route: RequireScopes).
//
// An allowed request reaches next with the claims (ClaimsFrom) and principal (PrincipalFrom) in its
// context. A refused one is answered 401 with a Bearer or DPoP challenge (error="invalid_token" or
// "invalid_dpop_proof"), 403 insufficient_scope, or 503 when the token cannot be verified right now
// (fail closed); the caller learns the OAuth error code, never the reason, which goes to the log and
// to access telemetry. Every decision, allowed or refused, is recorded (WithAccessRecorder) without
// blocking the request.
func Middleware(v Verifier, opts ...ServerOption) func(http.Handler) http.Handler {
	o := newServerOptions(opts)
	return func(next http.Handler) http.Handler {
		return &middleware{v: v, o: o, next: next}
	}
}

type middleware struct {
	v    Verifier
	o    *serverOptions
	next http.Handler
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := &requestState{o: m.o, start: m.o.now()}
	rw := &countingWriter{w: w}
	if m.o.recorder != nil {
		defer m.record(st, rw, r)
	}
	ctx := context.WithValue(r.Context(), stateKey{}, st)
	claims, rf := m.authenticate(ctx, r, st)
	if rf != nil {
		st.refuse(rw, *rf)
		return
	}
	ctx = WithPrincipal(WithClaims(ctx, claims), PrincipalFromClaims(claims))
	m.next.ServeHTTP(rw, r.WithContext(ctx))
}

func (m *middleware) record(st *requestState, rw *countingWriter, r *http.Request) {
	resource := r.URL.Path
	if m.o.resource != nil {
		resource = m.o.resource(r)
	}
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	m.o.recorder.Record(st.event(resource, r.Method, status, rw.bytes, remoteHost(r.RemoteAddr),
		r.Header.Get("X-Request-Id"), r.Header.Get("Traceparent")))
}

func remoteHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// authenticate verifies the request's credentials; a non-nil refusal says how to refuse it.
func (m *middleware) authenticate(ctx context.Context, r *http.Request, st *requestState) (*Claims, *refusal) {
	if r.URL.RawQuery != "" && strings.Contains(r.URL.RawQuery, "access_token") && r.URL.Query().Has("access_token") {
		return nil, &refusal{status: http.StatusBadRequest, code: "invalid_request", reason: ReasonTokenInQuery}
	}
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return nil, &refusal{status: http.StatusUnauthorized, reason: ReasonTokenMissing}
	}
	if len(values) > 1 {
		return nil, &refusal{status: http.StatusBadRequest, code: "invalid_request", reason: ReasonTokenScheme,
			cause: errors.New("more than one Authorization header")}
	}
	scheme, raw, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	raw = strings.TrimSpace(raw)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
	case strings.EqualFold(scheme, DPoPTokenType):
		st.dpop = true
	default:
		return nil, &refusal{status: http.StatusUnauthorized, reason: ReasonTokenScheme}
	}
	if raw == "" {
		return nil, &refusal{status: http.StatusUnauthorized, code: "invalid_token", reason: ReasonTokenMissing}
	}
	if m.v == nil {
		return nil, &refusal{status: http.StatusServiceUnavailable, reason: ReasonVerifierMissing,
			cause: errors.New("authn.Middleware was given no Verifier")}
	}
	claims, err := m.v.Verify(ctx, raw)
	if err != nil {
		rf := refusalOf(err, st.dpop)
		return nil, &rf
	}
	st.claims = claims
	st.binding = BindingBearer
	if claims.Confirmation != nil && claims.Confirmation.JKT != "" {
		st.dpop = true
		if !strings.EqualFold(scheme, DPoPTokenType) {
			return nil, &refusal{status: http.StatusUnauthorized, code: "invalid_token", reason: ReasonDPoPBoundAsBearer}
		}
		if rf := m.checkDPoP(ctx, r, raw, claims); rf != nil {
			return nil, rf
		}
		st.binding = BindingDPoP
	} else if st.dpop {
		return nil, &refusal{status: http.StatusUnauthorized, code: "invalid_token", reason: ReasonDPoPSchemeUnbound}
	}
	if err := CheckCertificateBinding(claims, r.TLS); err != nil {
		rf := refusalOf(err, st.dpop)
		return nil, &rf
	}
	if claims.Confirmation != nil && claims.Confirmation.X5TS256 != "" && st.binding == BindingBearer {
		st.binding = BindingMTLS
	}
	if err := CheckTenant(claims, m.o.tenants); err != nil {
		rf := refusalOf(err, st.dpop)
		return nil, &rf
	}
	if err := CheckScopes(claims, m.o.scopes...); err != nil {
		return nil, &refusal{status: http.StatusForbidden, code: "insufficient_scope", reason: ReasonInsufficientScope,
			scope: strings.Join(m.o.scopes, " "), cause: err}
	}
	return claims, nil
}

// checkDPoP verifies the request's DPoP proof for a DPoP-bound token and uses up its jti.
func (m *middleware) checkDPoP(ctx context.Context, r *http.Request, raw string, claims *Claims) *refusal {
	bad := func(err error) *refusal {
		rf := refusalOf(err, true)
		if rf.status == http.StatusUnauthorized {
			rf.code = "invalid_dpop_proof"
		}
		return &rf
	}
	proofJWT, err := DPoPProofFromHeader(r.Header)
	if err != nil {
		return bad(err)
	}
	now := m.o.now()
	proof, err := VerifyDPoPProof(proofJWT, DPoPCheck{
		Method: r.Method, URL: m.requestURL(r), AccessToken: raw, Now: now, MaxAge: m.o.dpopMaxAge,
	})
	if err != nil {
		return bad(err)
	}
	if err := CheckDPoPBinding(claims, proof); err != nil {
		return bad(err)
	}
	until := proof.IssuedAt.Add(m.o.dpopMaxAge + DefaultDPoPLeeway)
	fresh, err := m.o.replay.Use(ctx, proof.JKT+":"+proof.ID, until)
	switch {
	case err != nil:
		switch errs.KindOf(err) {
		case errs.KindUnavailable:
		case errs.KindResourceExhausted: // this key only: invalid_dpop_proof, never everyone's 503
			err = errs.Unauthenticated(ReasonDPoPKeyOverQuota, "too many DPoP proofs of this key in use").WithCause(err)
		default:
			err = errs.Unavailable(ReasonDPoPReplayCacheFull, "cannot accept the DPoP proof right now, retry later", err)
		}
		return bad(err)
	case !fresh:
		return bad(errs.Unauthenticated(ReasonDPoPReplayed, "DPoP proof was already used"))
	}
	return nil
}

// requestURL is the URL the client addressed, for htu: WithPublicURL's scheme and host, else the
// request's Host with https on TLS connections.
func (m *middleware) requestURL(r *http.Request) string {
	u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	if p := m.o.publicURL; p != nil {
		u.Scheme, u.Host = p.Scheme, p.Host
	}
	return u.String()
}

// countingWriter records the status and counts the bytes of a response.
type countingWriter struct {
	w      http.ResponseWriter
	status int
	bytes  int64
}

func (c *countingWriter) Header() http.Header { return c.w.Header() }

func (c *countingWriter) WriteHeader(status int) {
	if c.status == 0 && status >= 200 {
		c.status = status
	}
	c.w.WriteHeader(status)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.w.Write(b)
	c.bytes += int64(n)
	return n, err
}

// Flush sends buffered data to the client, when the underlying writer can.
func (c *countingWriter) Flush() {
	_ = http.NewResponseController(c.w).Flush()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.w }
