package clickhouse

import "time"

// EndOpenCheck ends the check of every batch against the stored rows that follows the first
// insert after Open, as recentHorizon after it does: benchmarks measure both.
func EndOpenCheck(s *Store) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.inserted, s.verifyUntil = true, time.Time{}
}

// PartitionEnd exposes partitionEnd to tests.
var PartitionEnd = partitionEnd
