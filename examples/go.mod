module github.com/agentid/agentid/examples

go 1.26.0

require (
	github.com/agentid/agentid/pkg v0.0.0
	github.com/nats-io/nats.go v1.55.0
)
