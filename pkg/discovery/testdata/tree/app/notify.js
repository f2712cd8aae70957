const webhook = "https://hooks.slack.com/services/T0PLANTED/B0PLANTED/Pl4ntedWebhookSecret123";
const session = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJnaG9zdC1hZ2VudCIsImNsaWVudF9pZCI6Imdob3N0LWp3dC1jbGllbnQifQ.Q2l0eVNpZ25hdHVyZVBsYW50ZWQxMjM0NQ";
module.exports = { webhook, session };
