package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/agentid/agentid/pkg/errs"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

func TestStartMSRoundsUp(t *testing.T) {
	base := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		start  time.Time
		want   int64
		wantOK bool
	}{
		{time.Time{}, 0, false},
		{base, base.UnixMilli(), true},
		{base.Add(time.Nanosecond), base.UnixMilli() + 1, true},
		{base.Add(999 * time.Microsecond), base.UnixMilli() + 1, true},
		{base.Add(-time.Nanosecond), base.UnixMilli(), true},
	}
	for _, tt := range tests {
		p, err := store.Prepare(store.Query{Tenant: "acme", Start: tt.start})
		if err != nil {
			t.Fatal(err)
		}
		if ms, ok := p.StartMS(); ms != tt.want || ok != tt.wantOK {
			t.Errorf("StartMS(%v) = %d, %v; want %d, %v", tt.start, ms, ok, tt.want, tt.wantOK)
		}
	}
}

// FuzzPageToken feeds arbitrary page tokens: each is either accepted or an InvalidArgument naming
// page_token, never a panic.
func FuzzPageToken(f *testing.F) {
	p, err := store.Prepare(store.Query{Tenant: "acme"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p.NextToken(store.Event{EventID: "e1", Time: time.Unix(1, 0)}))
	f.Add("")
	f.Add("e30")
	f.Add("eyJ0IjoxLCJpZCI6ImUxIiwiZiI6IngifQ")
	f.Fuzz(func(t *testing.T, token string) {
		_, err := store.Prepare(store.Query{Tenant: "acme", PageToken: token})
		if err != nil && (errs.KindOf(err) != errs.KindInvalidArgument || errs.FromStatus(err).Field != "page_token") {
			t.Errorf("token %q: err = %v, want InvalidArgument on page_token", token, err)
		}
	})
}

func TestSourceNetwork(t *testing.T) {
	tests := []struct {
		addr, want string
		ok         bool
	}{
		{"10.1.2.3", "10.1.2.0/24", true},
		{"255.255.255.255", "255.255.255.0/24", true},
		{"::ffff:192.0.2.77", "192.0.2.0/24", true},
		{"2001:db8:abcd:12::1", "2001:db8:abcd::/48", true},
		{"fe80::1%eth0", "fe80::/48", true},
		{"::1", "::/48", true},
		{"10.1.2.3:443", "", false},
		{"[2001:db8::1]:443", "", false},
		{"host.example", "", false},
		{"10.1.2", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := store.SourceNetwork(tt.addr)
		if got != tt.want || ok != tt.ok {
			t.Errorf("SourceNetwork(%q) = %q, %v; want %q, %v", tt.addr, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWindowMillisRoundUp(t *testing.T) {
	base := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	w := store.Window{From: base.Add(time.Nanosecond), To: base.Add(2 * time.Millisecond)}
	if from, to := w.Millis(); from != base.UnixMilli()+1 || to != base.UnixMilli()+2 {
		t.Errorf("Millis = %d, %d; want %d, %d", from, to, base.UnixMilli()+1, base.UnixMilli()+2)
	}
}

func TestPrepareInsert(t *testing.T) {
	at := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func(id string) store.Event {
		return store.Event{EventID: id, Tenant: "acme", Kind: "k", Time: at, Detail: "{}"}
	}
	bad := good("b")
	bad.Detail = "not json"
	tests := []struct {
		name       string
		normalized bool
		in         []store.Event
		wantIDs    []string
		wantErr    bool
	}{
		{"validated without the mark", false, []store.Event{good("a"), bad}, nil, true},
		{"duplicates dropped without the mark", false, []store.Event{good("a"), good("c"), good("a")}, []string{"a", "c"}, false},
		{"duplicates dropped with the mark", true, []store.Event{good("a"), good("c"), good("a")}, []string{"a", "c"}, false},
		{"not validated again with the mark", true, []store.Event{good("a"), bad}, []string{"a", "b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.normalized {
				ctx = store.WithNormalized(ctx)
			}
			if got := store.Normalized(ctx); got != tt.normalized {
				t.Fatalf("Normalized = %v, want %v", got, tt.normalized)
			}
			in := slices.Clone(tt.in)
			out, err := store.PrepareInsert(ctx, in)
			if tt.wantErr {
				if !errs.Is(err, errs.KindInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range out {
				ids = append(ids, e.EventID)
			}
			if !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("ids = %v, want %v", ids, tt.wantIDs)
			}
			if len(out) > 0 && &out[0] == &in[0] {
				t.Error("PrepareInsert returned the caller's slice")
			}
		})
	}
}
