// Package tlsx builds the platform's TLS configurations: a server configuration whose certificate is
// read from files and reloaded when they change (no restart to rotate a certificate), a client
// configuration that verifies servers against a CA file, and the loopback tests that decide where
// plaintext is still allowed (only to loopback addresses, as `agentid dev` uses them).
package tlsx
