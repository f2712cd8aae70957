package baseline

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	monitorv1 "github.com/agentid/agentid/proto/gen/go/agentid/monitor/v1"
	"github.com/agentid/agentid/services/monitor/internal/store"
)

// ToProto converts b, the baseline Get returned for agent (fromClass as Get said), to the GetBaseline
// RPC's message. Active hours are the hours of the day with requests in the window; hour-of-week slots
// without samples are left out.
func ToProto(agent string, b *Baseline, fromClass bool) *monitorv1.Baseline {
	if b == nil {
		return nil
	}
	out := &monitorv1.Baseline{
		Agent:       agent,
		ClassKey:    b.ClassKey,
		FromClass:   fromClass,
		ComputeTime: ts(b.ComputeTime),
		WindowStart: ts(b.WindowStart),
		WindowEnd:   ts(b.WindowEnd),
		Events:      b.Requests(),
		RowsMedian:  b.RowsMedian,
		RowsMad:     b.RowsMAD,
		BytesMedian: b.BytesMedian,
		BytesMad:    b.BytesMAD,
		DenyRate:    b.DenyRate(),
	}
	for how, s := range b.HourOfWeek {
		if s.Samples == 0 {
			continue
		}
		out.Hourly = append(out.Hourly, &monitorv1.HourOfWeekStats{HourOfWeek: int32(how), Median: s.Median, Mad: s.MAD, Samples: int32(s.Samples)})
	}
	for h := range b.HourOfDay {
		if b.ActiveHour(h) {
			out.ActiveHours = append(out.ActiveHours, int32(h))
		}
	}
	out.Resources = usageProto(b.Values(store.DimResource))
	out.Scopes = usageProto(b.Values(store.DimScope))
	out.SourceNetworks = usageProto(b.Values(store.DimSourceNetwork))
	out.OnBehalfOf = usageProto(b.Values(store.DimOnBehalfOf))
	return out
}

func usageProto(us []store.Usage) []*monitorv1.UsageCount {
	out := make([]*monitorv1.UsageCount, 0, len(us))
	for _, u := range us {
		out = append(out, &monitorv1.UsageCount{Value: u.Value, Count: u.Count, LastSeen: ts(u.LastSeen)})
	}
	return out
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
