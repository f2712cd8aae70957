module github.com/agentid/agentid/services/lifecycle

go 1.26
