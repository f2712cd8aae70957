//go:build !unix

package failpoint

import "os"

// killSelf ends the process at once, without deferred cleanup.
func killSelf() { os.Exit(137) }
