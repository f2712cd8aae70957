// Package analytics holds the analysts' ready queries over the telemetry store (docs/analytics.md):
// each is an embedded .sql file in ClickHouse's dialect, with a DuckDB variant where the dialects
// differ beyond FINAL. Parameters are written as ClickHouse query parameters ({tenant:String},
// {from:DateTime}, {to:DateTime}); clickhouse-client binds them with --param_<name>, and Bind
// substitutes literals for either engine.
package analytics

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed queries/*.sql queries/duckdb/*.sql
var files embed.FS

// Query is one ready query.
type Query struct {
	// Name is the file name without its number and extension, e.g. "who_accessed_what".
	Name string
	// File is the ClickHouse file's name, e.g. "01_who_accessed_what.sql".
	File string
	// Title is the query's first comment line.
	Title string
	// ClickHouse is the query in ClickHouse's dialect, as the file holds it.
	ClickHouse string
	// DuckDB is the query for the embedded store: its own file when the dialects differ, otherwise
	// ClickHouse without FINAL.
	DuckDB string
	// DuckDBFile is true when DuckDB comes from a file of its own.
	DuckDBFile bool
}

// Queries returns the ready queries in file order.
func Queries() ([]Query, error) {
	entries, err := fs.Glob(files, "queries/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(entries)
	out := make([]Query, 0, len(entries))
	for _, p := range entries {
		ch, err := files.ReadFile(p)
		if err != nil {
			return nil, err
		}
		file := path.Base(p)
		_, name, ok := strings.Cut(strings.TrimSuffix(file, ".sql"), "_")
		if !ok {
			return nil, fmt.Errorf("analytics: query file %s: want NN_name.sql", file)
		}
		q := Query{Name: name, File: file, ClickHouse: string(ch), Title: title(string(ch))}
		if dd, err := files.ReadFile("queries/duckdb/" + file); err == nil {
			q.DuckDB, q.DuckDBFile = string(dd), true
		} else {
			q.DuckDB = strings.ReplaceAll(q.ClickHouse, " FINAL", "")
		}
		out = append(out, q)
	}
	return out, nil
}

func title(sql string) string {
	line, _, _ := strings.Cut(sql, "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "--"))
}

// Dialect selects how Bind writes literals.
type Dialect int

// Dialects of Bind.
const (
	ClickHouse Dialect = iota
	DuckDB
)

// Params are the values of a query's parameters.
type Params struct {
	// Tenant is {tenant:String}.
	Tenant string
	// From and To are {from:DateTime} and {to:DateTime}, in UTC at second precision.
	From, To time.Time
}

var placeholder = regexp.MustCompile(`\{([a-z_]+):([A-Za-z0-9]+)\}`)

// Bind replaces the query parameters of sql with literals of p for dialect d; an unknown parameter
// is an error.
func Bind(sql string, p Params, d Dialect) (string, error) {
	var bad error
	out := placeholder.ReplaceAllStringFunc(sql, func(m string) string {
		sub := placeholder.FindStringSubmatch(m)
		switch sub[1] + ":" + sub[2] {
		case "tenant:String":
			return quote(p.Tenant, d)
		case "from:DateTime":
			return timestamp(p.From, d)
		case "to:DateTime":
			return timestamp(p.To, d)
		}
		bad = fmt.Errorf("analytics: unknown query parameter %s", m)
		return m
	})
	return out, bad
}

func quote(s string, d Dialect) string {
	if d == DuckDB {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

func timestamp(t time.Time, d Dialect) string {
	s := t.UTC().Format(time.DateTime)
	if d == DuckDB {
		return "TIMESTAMP '" + s + "'"
	}
	return "toDateTime('" + s + "', 'UTC')"
}
