module github.com/agentid/agentid/e2e

go 1.26
