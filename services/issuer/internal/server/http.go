// Package server holds the issuer's transport adapters: the OAuth HTTP endpoints and the gRPC
// IssuerService. They convert requests, call the core and map its errors, nothing else.
package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/authn"
	"github.com/agentid/agentid/pkg/observability"
	"github.com/agentid/agentid/pkg/ratelimit"

	"github.com/agentid/agentid/services/issuer/internal/oauth"
)

// RequestIDHeader carries the request id in both directions.
const RequestIDHeader = "X-Request-Id"

// HTTPConfig configures the HTTP handler.
type HTTPConfig struct {
	// OAuth is the authorization server. Required.
	OAuth *oauth.Server
	// Ready reports whether the credentials projection has caught up; until then requests are
	// answered 503. Default: always ready.
	Ready func() bool
	// Logger; default slog.Default().
	Logger *slog.Logger
	// PerIP, if set, limits the token, introspection and revocation requests of each source address
	// (an IPv6 address by its /64), checked before the body is read; over the limit a request is
	// answered 429 slow_down with Retry-After. The per-client limit is the OAuth server's
	// (oauth.Config.ClientLimiter). Nil disables.
	PerIP *ratelimit.Limiter
	// Registerer, if set, receives issuer_http_rate_limited_total.
	Registerer prometheus.Registerer
}

type httpAPI struct {
	oauth   *oauth.Server
	ready   func() bool
	logger  *slog.Logger
	perIP   *ratelimit.Limiter
	limited *prometheus.CounterVec
}

// NewHTTPHandler returns the OAuth/OIDC endpoints of every tenant:
//
//	GET  /t/{tenant}/.well-known/openid-configuration
//	GET  /t/{tenant}/.well-known/oauth-authorization-server
//	GET  /.well-known/oauth-authorization-server/t/{tenant}   (RFC 8414 §3.1 form)
//	GET  /t/{tenant}/jwks.json
//	POST /t/{tenant}/oauth2/token
//	POST /t/{tenant}/oauth2/introspect
//	POST /t/{tenant}/oauth2/revoke                            (RFC 7009)
func NewHTTPHandler(cfg HTTPConfig) http.Handler {
	h := &httpAPI{oauth: cfg.OAuth, ready: cfg.Ready, logger: cfg.Logger, perIP: cfg.PerIP}
	h.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "issuer_http_rate_limited_total",
		Help: "Token, introspection and revocation requests answered 429, by the limit they exceeded (ip or client).",
	}, []string{"limit"})
	if cfg.Registerer != nil {
		h.limited = observability.Register(cfg.Registerer, h.limited)
	}
	if h.ready == nil {
		h.ready = func() bool { return true }
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /t/{tenant}/.well-known/openid-configuration", h.metadata)
	mux.HandleFunc("GET /t/{tenant}/.well-known/oauth-authorization-server", h.metadata)
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/t/{tenant}", h.metadata)
	mux.HandleFunc("GET /t/{tenant}/jwks.json", h.jwks)
	mux.HandleFunc("POST /t/{tenant}/oauth2/token", h.token)
	mux.HandleFunc("POST /t/{tenant}/oauth2/introspect", h.introspect)
	mux.HandleFunc("POST /t/{tenant}/oauth2/revoke", h.revoke)
	return mux
}

// requestID returns the caller's well-formed X-Request-Id or a new UUIDv7, and echoes it.
func requestID(w http.ResponseWriter, r *http.Request) string {
	id := r.Header.Get(RequestIDHeader)
	if !validRequestID(id) {
		if u, err := uuid.NewV7(); err == nil {
			id = u.String()
		} else {
			id = uuid.NewString()
		}
	}
	w.Header().Set(RequestIDHeader, id)
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

func (h *httpAPI) notReady(w http.ResponseWriter) bool {
	if h.ready() {
		return false
	}
	w.Header().Set("Retry-After", "1")
	h.writeError(w, &oauth.Error{Code: oauth.ErrTemporarilyUnavailable, Status: http.StatusServiceUnavailable,
		Description: "the authorization server is starting, retry"})
	return true
}

func (h *httpAPI) metadata(w http.ResponseWriter, r *http.Request) {
	requestID(w, r)
	if h.notReady(w) {
		return
	}
	md, oerr := h.oauth.Metadata(r.PathValue("tenant"))
	if oerr != nil {
		h.writeError(w, oerr)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, md)
}

func (h *httpAPI) jwks(w http.ResponseWriter, r *http.Request) {
	requestID(w, r)
	if h.notReady(w) {
		return
	}
	set, oerr := h.oauth.JWKS(r.PathValue("tenant"))
	if oerr != nil {
		h.writeError(w, oerr)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	body, err := json.Marshal(set)
	if err != nil {
		h.writeError(w, &oauth.Error{Code: oauth.ErrServerError, Status: http.StatusInternalServerError, Description: "internal error", Cause: err})
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// overIPLimit answers 429 and returns true when the request's source address is over its limit.
func (h *httpAPI) overIPLimit(w http.ResponseWriter, r *http.Request) bool {
	if h.perIP == nil {
		return false
	}
	ok, wait := h.perIP.Allow(ratelimit.SourceKey(r.RemoteAddr))
	if ok {
		return false
	}
	h.limited.WithLabelValues("ip").Inc()
	requestID(w, r)
	e := oauth.SlowDown(wait)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(e.RetryAfter), 10))
	writeJSON(w, e.Status, errorBody{Error: e.Code, ErrorDescription: e.Description})
	return true
}

func (h *httpAPI) oauthRequest(w http.ResponseWriter, r *http.Request) oauth.Request {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	return oauth.Request{
		ContentType:   r.Header.Get("Content-Type"),
		Authorization: r.Header.Get("Authorization"),
		Body:          http.MaxBytesReader(w, r.Body, oauth.MaxBodyBytes),
		RequestID:     requestID(w, r),
		RemoteAddr:    r.RemoteAddr,
		Method:        r.Method,
		DPoP:          r.Header.Values(authn.DPoPHeader),
	}
}

func (h *httpAPI) token(w http.ResponseWriter, r *http.Request) {
	if h.overIPLimit(w, r) {
		return
	}
	req := h.oauthRequest(w, r)
	if h.notReady(w) {
		return
	}
	resp, oerr := h.oauth.Token(r.Context(), r.PathValue("tenant"), req)
	if oerr != nil {
		h.writeError(w, oerr)
		return
	}
	if resp.DPoPNonce != "" {
		w.Header().Set(authn.DPoPNonceHeader, resp.DPoPNonce)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *httpAPI) introspect(w http.ResponseWriter, r *http.Request) {
	if h.overIPLimit(w, r) {
		return
	}
	req := h.oauthRequest(w, r)
	if h.notReady(w) {
		return
	}
	resp, oerr := h.oauth.Introspect(r.Context(), r.PathValue("tenant"), req)
	if oerr != nil {
		h.writeError(w, oerr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// revoke answers 200 with an empty body when the token is revoked or was nothing to revoke
// (RFC 7009 §2.2).
func (h *httpAPI) revoke(w http.ResponseWriter, r *http.Request) {
	if h.overIPLimit(w, r) {
		return
	}
	req := h.oauthRequest(w, r)
	if h.notReady(w) {
		return
	}
	if oerr := h.oauth.Revoke(r.Context(), r.PathValue("tenant"), req); oerr != nil {
		h.writeError(w, oerr)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// errorBody is an RFC 6749 §5.2 error response.
type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func (h *httpAPI) writeError(w http.ResponseWriter, e *oauth.Error) {
	if e.Status >= http.StatusInternalServerError && e.Cause != nil {
		h.logger.Error("oauth request failed", "error", e.Code, "cause", e.Cause, "request_id", w.Header().Get(RequestIDHeader))
	}
	if e.Challenge != "" {
		w.Header().Set("WWW-Authenticate", e.Challenge)
	}
	if e.DPoPNonce != "" {
		w.Header().Set(authn.DPoPNonceHeader, e.DPoPNonce)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(ratelimit.RetryAfterSeconds(e.RetryAfter), 10))
	}
	if e.Code == oauth.ErrSlowDown {
		h.limited.WithLabelValues("client").Inc()
	}
	writeJSON(w, e.Status, errorBody{Error: e.Code, ErrorDescription: oauth.SafeDescription(e.Description)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
