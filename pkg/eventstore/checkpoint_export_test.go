package eventstore

import (
	"context"
	"time"
)

// PruneCheckpoints runs o's clean-up of projection name's superseded objects as if it were now.
func PruneCheckpoints(ctx context.Context, o *ObjectCheckpoints, name string, now time.Time) error {
	obs, err := o.open(ctx)
	if err != nil {
		return err
	}
	return o.prune(ctx, obs, name, o.objectName(name), now)
}

// SetCheckpointClock sets the clock o's clean-up compares the objects' times with.
func SetCheckpointClock(o *ObjectCheckpoints, now func() time.Time) { o.now = now }
