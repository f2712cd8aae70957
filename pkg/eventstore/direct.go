package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// loadPageSize is how many messages one direct-get batch asks for.
const loadPageSize = 512

// directGetRequest is the JetStream direct get request (server 2.11+ for batches).
type directGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
}

// numPendingHeader carries, on a batch's end-of-batch message, how many matching messages remain.
const numPendingHeader = "Nats-Num-Pending"

// errNoMessage is the direct get's 404: nothing matched.
var errNoMessage = errors.New("eventstore: no message")

// rawMsg is a stored message as returned by a direct get.
type rawMsg struct {
	stream  string
	subject string
	seq     uint64
	header  nats.Header
	data    []byte
}

func (m rawMsg) event() (Event, error) {
	return EventFromRaw(m.stream, m.seq, m.subject, m.header, m.data)
}

func (s *Store) apiPrefix() string {
	o := s.js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		if o.APIPrefix[len(o.APIPrefix)-1] != '.' {
			return o.APIPrefix + "."
		}
		return o.APIPrefix
	default:
		return jetstream.DefaultAPIPrefix
	}
}

// directGet sends one direct get request and calls fn for every message of the answer. For a batch
// it returns the number of matching messages still pending after the last one sent; it returns
// errNoMessage when nothing matched.
func (s *Store) directGet(ctx context.Context, stream string, req directGetRequest, fn func(rawMsg) error) (uint64, error) {
	// Bound every request, not only those without a deadline: a request written just before its
	// connection breaks is lost, and waiting for its answer would use up the caller's whole deadline.
	ctx, cancel := context.WithTimeout(ctx, s.js.Options().DefaultTimeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	nc := s.js.Conn()
	inbox := nc.NewInbox()
	// A channel sized for the whole answer (the batch and its end-of-batch message), not
	// SubscribeSync's default of 64k slots: that is half a megabyte allocated per get.
	ch := make(chan *nats.Msg, max(req.Batch, 1)+1)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, fmt.Errorf("eventstore: direct get on %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(s.apiPrefix()+"DIRECT.GET."+stream, inbox, body); err != nil {
		return 0, fmt.Errorf("eventstore: direct get on %s: %w", stream, err)
	}
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("eventstore: direct get on %s: %w", stream, ctx.Err())
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404":
			return 0, errNoMessage
		case "204": // end of batch
			return parseUint(m.Header.Get(numPendingHeader)), nil
		case "503":
			return 0, fmt.Errorf("eventstore: direct get on %s: no responders (missing stream, or direct gets disabled; run EnsureStreams)", stream)
		default:
			return 0, fmt.Errorf("eventstore: direct get on %s: status %s %s", stream, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("eventstore: direct get on %s: bad %s header: %w", stream, jetstream.SequenceHeader, err)
		}
		if err := fn(rawMsg{stream: stream, subject: m.Header.Get(jetstream.SubjectHeader), seq: seq, header: m.Header, data: m.Data}); err != nil {
			return 0, err
		}
		if req.Batch == 0 {
			return 0, nil
		}
	}
}

// scan calls fn, in order, for every message on stream matching filter with a sequence of at least
// from, paging until it has seen everything that was stored when it started the last page.
func (s *Store) scan(ctx context.Context, stream, filter string, from uint64, fn func(rawMsg) error) error {
	if from == 0 {
		from = 1
	}
	for {
		last := uint64(0)
		pending, err := s.directGet(ctx, stream, directGetRequest{Seq: from, NextFor: filter, Batch: loadPageSize}, func(m rawMsg) error {
			last = m.seq
			return fn(m)
		})
		if errors.Is(err, errNoMessage) {
			return nil
		}
		if err != nil {
			return err
		}
		if pending == 0 || last == 0 {
			return nil
		}
		from = last + 1
	}
}

// lastSeq returns the sequence of the last message on stream matching filter, 0 if there is none.
func (s *Store) lastSeq(ctx context.Context, stream, filter string) (uint64, error) {
	var seq uint64
	_, err := s.directGet(ctx, stream, directGetRequest{LastFor: filter}, func(m rawMsg) error {
		seq = m.seq
		return nil
	})
	if errors.Is(err, errNoMessage) {
		return 0, nil
	}
	return seq, err
}

// getSeq returns the message with sequence seq on stream.
func (s *Store) getSeq(ctx context.Context, stream string, seq uint64) (rawMsg, error) {
	var out rawMsg
	_, err := s.directGet(ctx, stream, directGetRequest{Seq: seq}, func(m rawMsg) error {
		out = m
		return nil
	})
	return out, err
}

func parseUint(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
