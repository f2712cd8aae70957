package replay

// Prune runs one prune of the log's expired ids now.
func (l *Log) Prune() { l.prune() }
