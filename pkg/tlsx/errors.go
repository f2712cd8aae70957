package tlsx

import "fmt"

// FileKind says which of a process's TLS files an error is about.
type FileKind string

// The TLS files a process reads.
const (
	// CertFile is a server (or client) certificate chain in PEM.
	CertFile FileKind = "certificate"
	// KeyFile is the private key of a certificate, in PEM.
	KeyFile FileKind = "key"
	// CAFile is a bundle of trusted CA certificates in PEM.
	CAFile FileKind = "CA"
)

// FileError is a TLS file that is missing, unreadable or unusable; callers map Kind to their flag
// name so that a start-up error names both the flag and the file.
type FileError struct {
	// Kind is the role of the file.
	Kind FileKind
	// Path is the file as configured.
	Path string
	// Err is what is wrong with it.
	Err error
}

// Error names the file and what is wrong.
func (e *FileError) Error() string { return fmt.Sprintf("%s file %s: %v", e.Kind, e.Path, e.Err) }

// Unwrap returns the cause.
func (e *FileError) Unwrap() error { return e.Err }
