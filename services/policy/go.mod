module github.com/agentid/agentid/services/policy

go 1.26
