module github.com/agentid/agentid/cmd

go 1.26
