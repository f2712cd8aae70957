module github.com/agentid/agentid/services/registry

go 1.26
