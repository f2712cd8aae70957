package registry

import (
	"fmt"
	"slices"
	"strings"

	"github.com/agentid/agentid/pkg/errs"
	registryv1 "github.com/agentid/agentid/proto/gen/go/agentid/registry/v1"
)

// Command is a command on an existing agent, as the state machine knows it.
type Command string

// The commands on an existing agent.
const (
	CmdSubmit             Command = "submit"
	CmdActivate           Command = "activate"
	CmdReject             Command = "reject"
	CmdRetire             Command = "retire"
	CmdCompleteRetirement Command = "complete the retirement of"
	CmdSuspend            Command = "suspend"
	CmdResume             Command = "resume"
	CmdExpire             Command = "expire"
	CmdUpdate             Command = "update"
	CmdAddKey             Command = "add a key to"
	CmdRemoveKey          Command = "remove a key of"
	CmdRemoveScopes       Command = "remove scopes of"
	CmdTransferOwnership  Command = "transfer the ownership of"
)

// Agent states, short.
const (
	stProposed  = registryv1.AgentState_AGENT_STATE_PROPOSED
	stPending   = registryv1.AgentState_AGENT_STATE_PENDING
	stActive    = registryv1.AgentState_AGENT_STATE_ACTIVE
	stSuspended = registryv1.AgentState_AGENT_STATE_SUSPENDED
	stRetiring  = registryv1.AgentState_AGENT_STATE_RETIRING
	stRetired   = registryv1.AgentState_AGENT_STATE_RETIRED
	stRejected  = registryv1.AgentState_AGENT_STATE_REJECTED
	stExpired   = registryv1.AgentState_AGENT_STATE_EXPIRED
)

// AllStates are the states an existing agent can be in.
var AllStates = []registryv1.AgentState{stProposed, stPending, stActive, stSuspended, stRetiring, stRetired, stRejected, stExpired}

// Transitions is the agent state machine: the states each command is allowed from. Every command
// on an existing agent asks it (Agent.allow) before deciding anything; a command in another state is
// FailedPrecondition AGENT_STATE_<state> and writes nothing. (Registration creates the agent PROPOSED
// or PENDING; RETIRED and REJECTED are terminal.) docs/registry.md shows the same table.
var Transitions = map[Command][]registryv1.AgentState{
	CmdSubmit:             {stProposed},
	CmdActivate:           {stPending},
	CmdReject:             {stPending},
	CmdRetire:             {stProposed, stPending, stActive, stSuspended, stExpired},
	CmdCompleteRetirement: {stRetiring},
	CmdSuspend:            {stActive},
	CmdResume:             {stSuspended},
	CmdExpire:             {stProposed, stPending, stActive, stSuspended},
	CmdUpdate:             {stProposed, stPending, stActive, stSuspended},
	CmdAddKey:             {stActive},
	CmdRemoveKey:          {stProposed, stPending, stActive, stSuspended, stRetiring, stRetired, stRejected, stExpired},
	CmdRemoveScopes:       {stActive, stSuspended},
	CmdTransferOwnership:  {stProposed, stPending, stActive, stSuspended, stRetiring, stExpired},
}

// Commands lists the commands of Transitions in a stable order.
func Commands() []Command {
	out := make([]Command, 0, len(Transitions))
	for c := range Transitions {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Allowed reports whether cmd is allowed on an agent in state st.
func Allowed(cmd Command, st registryv1.AgentState) bool {
	return slices.Contains(Transitions[cmd], st)
}

// allow returns nil when the agent's state allows cmd, and the FailedPrecondition that names the
// state and the states cmd is allowed from otherwise.
func (a *Agent) allow(cmd Command) error {
	if Allowed(cmd, a.State()) {
		return nil
	}
	allowed := Transitions[cmd]
	names := make([]string, len(allowed))
	for i, s := range allowed {
		names[i] = stateName(s)
	}
	cur := stateName(a.State())
	return errs.FailedPrecondition("AGENT_STATE_"+cur,
		fmt.Sprintf("cannot %s an agent in state %s (allowed from %s)", cmd, cur, strings.Join(names, ", "))).
		WithMetadata("state", cur)
}
