package authn

// TemporalAudience is the audience (RFC 8707 resource) of access tokens for the Temporal frontend:
// its JWT authorizer accepts tokens of our system tenant's issuer addressed to it, and reads the
// Temporal namespace roles from their "permissions" claim (docs/deploy.md, "Temporal").
const TemporalAudience = "urn:agentid:temporal"
