package clickhouse_test

import (
	"context"
	"testing"

	"github.com/agentid/agentid/pkg/clickhousedev"
	"github.com/agentid/agentid/services/monitor/internal/store"
	"github.com/agentid/agentid/services/monitor/internal/store/clickhouse"
	"github.com/agentid/agentid/services/monitor/internal/store/storetest"
)

func TestCoverageStart(t *testing.T) {
	storetest.RunCoverage(t, func(t *testing.T) store.Store {
		_, dsn := clickhousedev.Database(t)
		s, err := clickhouse.Open(context.Background(), clickhouse.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
