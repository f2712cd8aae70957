//go:build !unix

package eventstore

import "os"

// foreignOwner reports no foreign owner where the platform has no numeric file owners.
func foreignOwner(os.FileInfo) (uid int, foreign bool) { return 0, false }
