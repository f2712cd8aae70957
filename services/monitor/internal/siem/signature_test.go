package siem_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentid/agentid/services/monitor/internal/siem"
)

var secret = []byte("0123456789abcdef-webhook-secret")

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"class_uid":2004}`)
	now := time.Now()
	good := siem.Sign(secret, body, now)
	other := siem.Sign([]byte("another-secret-of-16+bytes"), body, now)
	_, v1, _ := strings.Cut(good, ",")
	tests := []struct {
		name      string
		secret    []byte
		header    string
		body      []byte
		tolerance time.Duration
		want      error
	}{
		{name: "valid", secret: secret, header: good, body: body},
		{name: "valid with spaces", secret: secret, header: strings.ReplaceAll(good, ",", ", "), body: body},
		{name: "rotation: one of two v1 matches", secret: secret, header: other + "," + v1, body: body},
		{name: "body changed", secret: secret, header: good, body: []byte(`{"class_uid":2005}`), want: siem.ErrSignatureMismatch},
		{name: "wrong secret", secret: []byte("not-the-right-secret!"), header: good, body: body, want: siem.ErrSignatureMismatch},
		{name: "old timestamp", secret: secret, header: siem.Sign(secret, body, now.Add(-10*time.Minute)), body: body, want: siem.ErrSignatureExpired},
		{name: "future timestamp", secret: secret, header: siem.Sign(secret, body, now.Add(10*time.Minute)), body: body, want: siem.ErrSignatureExpired},
		{name: "old timestamp inside a wider tolerance", secret: secret, header: siem.Sign(secret, body, now.Add(-10*time.Minute)), body: body, tolerance: time.Hour},
		{name: "timestamp replaced", secret: secret, header: "t=" + fmt.Sprint(now.Unix()+1) + "," + v1, body: body, want: siem.ErrSignatureMismatch},
		{name: "no v1", secret: secret, header: "t=" + fmt.Sprint(now.Unix()), body: body, want: siem.ErrSignatureMalformed},
		{name: "no t", secret: secret, header: v1, body: body, want: siem.ErrSignatureMalformed},
		{name: "v1 not hex", secret: secret, header: "t=1,v1=zz", body: body, want: siem.ErrSignatureMalformed},
		{name: "empty", secret: secret, header: "", body: body, want: siem.ErrSignatureMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := siem.VerifySignature(tt.secret, tt.header, tt.body, tt.tolerance)
			if tt.want == nil && err != nil {
				t.Fatalf("VerifySignature = %v, want nil", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("VerifySignature = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := siem.LoadSecret(write("ok", string(secret)+"\n"))
	if err != nil || string(got) != string(secret) {
		t.Fatalf("LoadSecret = %q, %v; want the secret without the newline", got, err)
	}
	short := write("short", "tooshort\n")
	if _, err := siem.LoadSecret(short); err == nil || strings.Contains(err.Error(), "tooshort") || !strings.Contains(err.Error(), short) {
		t.Fatalf("LoadSecret(short) = %v; want an error naming the file, not the secret", err)
	}
	if _, err := siem.LoadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("LoadSecret(missing) succeeded")
	}
}

func TestCheckWebhookURL(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
	}{
		{url: "https://siem.example.com/hook?token=x"},
		{url: "http://127.0.0.1:8080/hook"},
		{url: "http://[::1]:8080/hook"},
		{url: "http://localhost/hook"},
		{url: "http://siem.example.com/hook", wantErr: "loopback"},
		{url: "http://10.0.0.1/hook", wantErr: "loopback"},
		{url: "https://user:pass@siem.example.com/hook", wantErr: "user info"},
		{url: "ftp://siem.example.com/hook", wantErr: "https"},
		{url: "/relative", wantErr: "https"},
		{url: "", wantErr: "https"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := siem.CheckWebhookURL(tt.url)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("CheckWebhookURL = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("CheckWebhookURL = %v, want an error with %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "pass"):
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}

// ExampleVerifySignature shows a receiver checking a request before using it.
func ExampleVerifySignature() {
	secret := []byte("0123456789abcdef-webhook-secret") // the content of --siem-webhook-secret-file
	body := []byte(`{"class_uid":2004,"metadata":{"uid":"0195..."}}`)
	header := siem.Sign(secret, body, time.Now()) // what the monitor sends as X-Agentid-Signature

	// In an http.Handler: body, _ := io.ReadAll(r.Body); header := r.Header.Get(siem.HeaderSignature)
	if err := siem.VerifySignature(secret, header, body, 5*time.Minute); err != nil {
		fmt.Println("refuse:", err) // answer 401; the monitor dead-letters it
		return
	}
	fmt.Println("accepted")
	// Output: accepted
}
