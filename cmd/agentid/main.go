// Command agentid runs the agentid platform; `agentid dev` runs all of it in one process on embedded engines.
package main

import (
	"os"

	"github.com/agentid/agentid/cmd/internal/dev"
)

func main() {
	os.Exit(dev.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
