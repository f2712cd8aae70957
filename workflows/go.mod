module github.com/agentid/agentid/workflows

go 1.26
