package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/service"
)

// bodyComponent serves POST /upload, reading the whole body; each outcome goes to results.
type bodyComponent struct {
	component
	results chan bodyResult
}

type bodyResult struct {
	n   int64
	err error
}

func (c *bodyComponent) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		c.results <- bodyResult{n: n, err: err}
		if err != nil {
			http.Error(w, "body not read", http.StatusBadRequest)
			return
		}
		_, _ = fmt.Fprintf(w, "%d\n", n)
	})
	return mux
}

func TestSlowBodyClientCutOff(t *testing.T) {
	const bodySize = 100_000
	c := &bodyComponent{component: component{name: "upload", grpcSvc: "agentid.test.v1.Upload"}, results: make(chan bodyResult, 4)}
	r := start(t, service.RunConfig{Components: []service.Component{c},
		HTTPLimits: service.HTTPLimits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second}})
	addr := strings.TrimPrefix(r.httpBase, "http://")
	header := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", addr, bodySize)

	// A client that sends its body at once is served: the limit is on slowness, not on size.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(header + strings.Repeat("x", bodySize))); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fast client: status %d, want 200", resp.StatusCode)
	}
	if res := <-c.results; res.err != nil || res.n != bodySize {
		t.Fatalf("fast client: handler read %d bytes, error %v", res.n, res.err)
	}

	// A client that sends the headers, then trickles the body one byte at a time, is cut off.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte(header)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, slow) // whatever the server answers, until it closes the connection
	}()
	sent := 0
	deadline := time.After(waitTimeout)
trickle:
	for {
		select {
		case <-closed:
			break trickle
		case <-deadline:
			t.Fatalf("the server still holds the connection of a client trickling its body after %d bytes", sent)
		case <-time.After(10 * time.Millisecond): // the client's pace, not a synchronisation
			if _, err := slow.Write([]byte("x")); err != nil {
				break trickle
			}
			sent++
		}
	}
	select {
	case res := <-c.results:
		var ne net.Error
		if res.err == nil || !errors.As(res.err, &ne) || !ne.Timeout() || res.n >= bodySize {
			t.Fatalf("handler read %d of %d bytes with error %v, want a read timeout before the end", res.n, bodySize, res.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the handler never saw the slow body end")
	}
	if sent >= bodySize {
		t.Fatalf("the whole body (%d bytes) was sent before the cut-off", sent)
	}
}

func TestMetricsOnAdminListenerOnly(t *testing.T) {
	tests := []struct {
		name           string
		admin          bool
		pprof          bool
		wantPublicCode int // of GET /metrics on the public listener
		wantPprofCode  int // of GET /debug/pprof/ on the admin listener
	}{
		{name: "no admin listener", wantPublicCode: http.StatusOK},
		{name: "admin listener", admin: true, wantPublicCode: http.StatusNotFound, wantPprofCode: http.StatusNotFound},
		{name: "admin listener with pprof", admin: true, pprof: true, wantPublicCode: http.StatusNotFound, wantPprofCode: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := service.RunConfig{Components: []service.Component{&component{name: "svc", grpcSvc: "agentid.test.v1.Svc"}}}
			adminAddr := make(chan string, 1)
			if tt.admin {
				cfg.AdminAddr, cfg.AdminPprof = "127.0.0.1:0", tt.pprof
				cfg.OnAdminListening = func(a string) { adminAddr <- a }
			}
			r := start(t, cfg)
			if code, body := r.get(t, "/metrics"); code != tt.wantPublicCode {
				t.Fatalf("public /metrics: %d %q, want %d", code, body, tt.wantPublicCode)
			}
			for _, probe := range []string{"/livez", "/readyz"} {
				eventually(t, "public "+probe, func() error { return wantStatus(r.httpBase+probe, http.StatusOK, "") })
			}
			if !tt.admin {
				return
			}
			base := "http://" + <-adminAddr
			for _, c := range []struct {
				path     string
				code     int
				contains string
			}{
				{"/metrics", http.StatusOK, "go_goroutines"},
				{"/livez", http.StatusOK, "ok"},
				{"/readyz", http.StatusOK, ""},
				{"/debug/pprof/", tt.wantPprofCode, ""},
			} {
				eventually(t, "admin "+c.path, func() error { return wantStatus(base+c.path, c.code, c.contains) })
			}
		})
	}
}

// wantStatus GETs url and checks the status code and that the body contains contains.
func wantStatus(url string, code int, contains string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != code || !strings.Contains(string(b), contains) {
		return fmt.Errorf("GET %s: %d %.200q, want %d containing %q", url, resp.StatusCode, b, code, contains)
	}
	return nil
}
