module github.com/agentid/agentid/services/issuer

go 1.26
