module github.com/agentid/agentid/services/monitor

go 1.26
