module github.com/agentid/agentid/loadtest

go 1.26
