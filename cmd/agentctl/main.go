// Command agentctl is the operator and developer CLI of agentid.
package main

import (
	"os"

	"github.com/agentid/agentid/cmd/internal/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
