package eventstore

import (
	"regexp"
	"strings"
)

const maxTokenLen = 255

var (
	tenantRE        = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)
	aggregateTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
)

// checkToken validates one NATS subject token: non-empty, printable ASCII, no dots, no wildcards.
func checkToken(field, v string) error {
	if v == "" {
		return invalid(field, "must not be empty")
	}
	if len(v) > maxTokenLen {
		return invalid(field, "longer than %d bytes", maxTokenLen)
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.':
			return invalid(field, "%q must not contain '.'", v)
		case c == '*' || c == '>':
			return invalid(field, "%q must not contain wildcards", v)
		case c <= ' ' || c >= 0x7f:
			return invalid(field, "%q must be printable ASCII without spaces", v)
		}
	}
	return nil
}

func checkTenant(field, v string) error {
	if !tenantRE.MatchString(v) {
		return invalid(field, "%q does not match %s", v, tenantRE)
	}
	return nil
}

func checkAggregateType(field, v string) error {
	if !aggregateTypeRE.MatchString(v) {
		return invalid(field, "%q does not match %s", v, aggregateTypeRE)
	}
	return nil
}

// checkHeaderValue refuses values that cannot travel in a NATS header.
func checkHeaderValue(field, v string) error {
	if strings.ContainsAny(v, "\r\n") {
		return invalid(field, "must not contain line breaks")
	}
	return nil
}

// checkSubject validates a full publish subject: dot-separated valid tokens.
func checkSubject(field, v string) error {
	if v == "" {
		return invalid(field, "must not be empty")
	}
	for _, tok := range strings.Split(v, ".") {
		if err := checkToken(field, tok); err != nil {
			return invalid(field, "%q is not a valid subject: %s", v, err.(*InvalidError).Reason)
		}
	}
	return nil
}

func checkMetadata(md Metadata, requireActor bool) error {
	if requireActor || md.Actor.ID != "" || md.Actor.Kind != "" {
		if md.Actor.ID == "" {
			return invalid("metadata.actor.id", "must not be empty")
		}
		if err := checkHeaderValue("metadata.actor.id", md.Actor.ID); err != nil {
			return err
		}
		if !md.Actor.Kind.Valid() {
			return invalid("metadata.actor.kind", "%q is not one of human, agent, service", md.Actor.Kind)
		}
	}
	for _, f := range []struct{ name, v string }{
		{"metadata.on_behalf_of", md.OnBehalfOf},
		{"metadata.correlation_id", md.CorrelationID},
		{"metadata.causation_id", md.CausationID},
		{"metadata.traceparent", md.Traceparent},
	} {
		if err := checkHeaderValue(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}
