package duckdb_test

import (
	"context"
	"testing"

	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/duckdb"
	"github.com/agentid/agentid/services/monitor/internal/store/storetest"
)

func TestCoverageStart(t *testing.T) {
	storetest.RunCoverage(t, func(t *testing.T) store.Store {
		s, err := duckdb.Open(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
