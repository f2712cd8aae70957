package siem

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Webhook request headers.
const (
	// HeaderSignature carries t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
	HeaderSignature = "X-Agentid-Signature"
	// HeaderEventID carries the OCSF metadata.uid, for the receiver to drop redeliveries.
	HeaderEventID = "X-Agentid-Event-Id"
)

// MinSecretLen is the shortest webhook secret accepted, in bytes.
const MinSecretLen = 16

// DefaultSignatureTolerance is how far a signature's timestamp may be from the receiver's clock.
const DefaultSignatureTolerance = 5 * time.Minute

// Errors of VerifySignature.
var (
	// ErrSignatureMalformed marks a signature header that is not t=<unix>,v1=<hex>.
	ErrSignatureMalformed = errors.New("siem: signature header is malformed")
	// ErrSignatureExpired marks a timestamp outside the tolerance (a replay, or a skewed clock).
	ErrSignatureExpired = errors.New("siem: signature timestamp is outside the tolerance")
	// ErrSignatureMismatch marks a signature that does not match the body and secret.
	ErrSignatureMismatch = errors.New("siem: signature does not match")
)

// Sign returns the signature header value of body sent at t: t=<unix>,v1=<hex HMAC-SHA256(secret,
// "<unix>.<body>")>.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// VerifySignature checks a webhook request as a receiver: header is the X-Agentid-Signature value,
// body the raw request body, tolerance how far its timestamp may be from now (0 means
// DefaultSignatureTolerance). It accepts the request if any v1 entry matches (several appear while
// a secret is rotated) and compares in constant time. Receivers should also drop an
// X-Agentid-Event-Id they have already processed.
func VerifySignature(secret []byte, header string, body []byte, tolerance time.Duration) error {
	return verifyAt(secret, header, body, tolerance, time.Now())
}

func verifyAt(secret []byte, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	if len(secret) == 0 {
		return errors.New("siem: empty secret")
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureMalformed
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return ErrSignatureMalformed
			}
			sigs = append(sigs, sig)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrSignatureMalformed
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off (tolerance %s)", ErrSignatureExpired, d.Round(time.Second), tolerance)
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}

// LoadSecret reads a webhook secret from path: the file's content without surrounding whitespace,
// at least MinSecretLen bytes. The error names the file, never its content.
func LoadSecret(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("siem: webhook secret file: %w", err)
	}
	s := []byte(strings.TrimSpace(string(raw)))
	if len(s) < MinSecretLen {
		return nil, fmt.Errorf("siem: webhook secret file %s: the secret has %d bytes, want at least %d", path, len(s), MinSecretLen)
	}
	return s, nil
}
