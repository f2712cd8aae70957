// Package bundle holds the default policy bundle, compiled into the policy service.
package bundle

import "embed"

// FS is the default bundle: the Rego modules and their unit tests.
//
//go:embed *.rego
var FS embed.FS
