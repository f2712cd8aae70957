package replay

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/agentid/agentid/pkg/testkit"
)

// A delivery of the consumer a reread stopped can still run (nats.go does not wait for it): it must
// not be applied to the new index. Here another replica's record holds "dup" at seq 1 and this
// replica's request for "dup" is appended at seq 2; the old consumer's delivery of seq 2 is held until
// after the reread, when it would make seq 2 the first record of "dup".
func TestLogIgnoresAStoppedConsumersDelivery(t *testing.T) {
	n := testkit.StartNATS(t)
	l := NewLog(n.JetStream(t), LogConfig{WaitTimeout: time.Minute})
	var calls atomic.Int32
	gates := []chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	l.beforeApply = func() {
		if i := int(calls.Add(1)) - 1; i < len(gates) {
			<-gates[i]
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() {
		for _, g := range gates {
			select {
			case <-g:
			default:
				close(g)
			}
		}
		cancel()
		<-done
	})
	if err := l.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	k := logKeyOf("acme", "c1", "dup")
	data := []byte{logFormat, 1, 2, 3, 4, 5, 6, 7, 8}
	data = append(data, k[:]...)
	data = binary.BigEndian.AppendUint64(data, uint64(time.Now().Add(5*time.Minute).UnixMilli()))
	if _, err := n.JetStream(t).Publish(t.Context(), LogSubject, data); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 0, "the delivery of seq 1 held", func() (bool, error) { return calls.Load() >= 1, nil })
	res := make(chan error, 1)
	go func() { res <- l.Use(context.Background(), "acme", "c1", "dup") }()
	testkit.Eventually(t, 0, "the request's record appended", func() (bool, error) { return l.Stats().Records == 1, nil })
	close(gates[0])
	testkit.Eventually(t, 0, "seq 1 applied and the delivery of seq 2 held", func() (bool, error) {
		return l.Stats().Applied == 1 && calls.Load() >= 2, nil
	})
	l.requestRebuild(2)
	testkit.Eventually(t, 0, "the reread started", func() (bool, error) {
		st := l.Stats()
		return st.Rebuilds == 1 && st.Applied == 0, nil
	})
	testkit.Eventually(t, 0, "the new consumer's first delivery held", func() (bool, error) { return calls.Load() >= 3, nil })
	close(gates[1]) // the stopped consumer's delivery of seq 2 goes on
	// Applied, it would answer the request at once (wrongly); ignored, the request waits for the new
	// consumer, held at its first delivery.
	select {
	case err := <-res:
		t.Fatalf("answered before the new consumer read seq 1: %v", err)
	case <-time.After(2 * time.Second):
	}
	close(gates[2])
	select {
	case err := <-res:
		if !errors.Is(err, ErrReplayed) {
			t.Fatalf("use of an id an earlier record holds = %v, want ErrReplayed", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no answer within a minute")
	}
}

// A replica that starts after every record aged out of the stream (which keeps its last sequence)
// is ready at once: there is nothing to read.
func TestLogReadyWhenEveryRecordAgedOut(t *testing.T) {
	n := testkit.StartNATS(t)
	js := n.JetStream(t)
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: LogStream, Subjects: []string{LogSubject}, MaxAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(t.Context(), LogSubject, []byte{logFormat, 1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 0, "the records to age out", func() (bool, error) {
		info, err := st.Info(t.Context())
		return err == nil && info.State.Msgs == 0 && info.State.LastSeq == 3, err
	})
	l := NewLog(js, LogConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rctx, rcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer rcancel()
	if err := l.Ready(rctx); err != nil {
		t.Fatalf("Ready on a stream whose records aged out: %v", err)
	}
	if err := l.Use(t.Context(), "acme", "c1", "first"); err != nil {
		t.Fatal(err)
	}
}
