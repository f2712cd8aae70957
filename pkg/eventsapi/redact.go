package eventsapi

import (
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentid/agentid/pkg/eventstore"
)

// secretField reports whether a payload field holds secret material that never leaves the platform:
// sealed keys (SigningKeyCreated.sealed_private_jwk) and any field named as private or secret.
func secretField(fd protoreflect.FieldDescriptor) bool {
	name := string(fd.Name())
	return strings.HasPrefix(name, "sealed_") || strings.Contains(name, "private") || strings.Contains(name, "secret")
}

// redact clears every secret field of m and of the messages it contains.
func redact(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case secretField(fd):
			m.Clear(fd)
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redact(mv.Message())
					return true
				})
			}
		case fd.Message() != nil && fd.IsList():
			l := v.List()
			for i := range l.Len() {
				redact(l.Get(i).Message())
			}
		case fd.Message() != nil:
			redact(v.Message())
		}
		return true
	})
}

// payload decodes e's payload and removes its secrets. ok is false when the payload cannot be
// decoded (unknown type or malformed): then nothing of it may be sent.
func payload(e eventstore.Event) (msg proto.Message, ok bool) {
	m, err := e.Decode()
	if err != nil {
		return nil, false
	}
	redact(m.ProtoReflect())
	return m, true
}
