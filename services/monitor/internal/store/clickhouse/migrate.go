package clickhouse

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migrations are the schema's versioned migrations, NNN_name.sql, applied in order by Open. The
// copies in deploy/clickhouse/schema are checked equal to them by a test.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// embeddedMigrations loads Migrations.
func embeddedMigrations() ([]Migration, error) {
	sub, err := fs.Sub(Migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: migrations: %w", err)
	}
	return LoadMigrations(sub)
}

// Migration is one numbered schema migration.
type Migration struct {
	// Version is the number the file name starts with.
	Version int
	// Name is the file name (e.g. 001_telemetry_events.sql).
	Name string
	// Statements are the file's statements, in order, without comments.
	Statements []string
}

var migrationName = regexp.MustCompile(`^([0-9]{3})_[a-z0-9_]+\.sql$`)

// LoadMigrations reads the migrations of fsys (a directory of NNN_name.sql files) ordered by
// version; a misnamed file or two files of one version are an error.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, fmt.Errorf("clickhouse: migrations: %s is not named NNN_name.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("clickhouse: migration %s: %w", e.Name(), err)
		}
		stmts := splitStatements(string(body))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("clickhouse: migration %s has no statement", e.Name())
		}
		out = append(out, Migration{Version: v, Name: e.Name(), Statements: stmts})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("clickhouse: migrations %s and %s have the same version", out[i-1].Name, out[i].Name)
		}
	}
	return out, nil
}

// splitStatements drops whole-line comments and splits at semicolons that end a line.
func splitStatements(sql string) []string {
	var (
		out []string
		cur strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for line := range strings.Lines(sql) {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") {
			continue
		}
		if strings.HasSuffix(trimmed, ";") {
			cur.WriteString(strings.TrimSuffix(strings.TrimRight(line, " \t\r\n"), ";"))
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return out
}

// migrationsTable records the applied migrations.
const migrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime
)
ENGINE = MergeTree()
ORDER BY version`

// Migrate applies the migrations the database has not recorded in schema_migrations, in order,
// recording each once all its statements succeeded; re-running it is a no-op. A failure names the
// migration and statement, and the migrations after it are not applied.
func Migrate(ctx context.Context, conn driver.Conn, migrations []Migration) error {
	if err := conn.Exec(ctx, migrationsTable); err != nil {
		return fmt.Errorf("clickhouse: create schema_migrations: %w", err)
	}
	applied, err := AppliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("clickhouse: migration %s, statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := record(ctx, conn, m); err != nil {
			return fmt.Errorf("clickhouse: migration %s: record it: %w", m.Name, err)
		}
	}
	return nil
}

// record adds m to schema_migrations (a one-row batch: an INSERT with VALUES through Exec waits
// forever on ClickHouse 18.16).
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	b, err := conn.PrepareBatch(ctx, `INSERT INTO schema_migrations (version, name, applied_at)`)
	if err != nil {
		return err
	}
	if err := b.Append(uint32(m.Version), m.Name, time.Now().UTC().Truncate(time.Second)); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

// AppliedMigrations returns the versions recorded in schema_migrations with their file names.
func AppliedMigrations(ctx context.Context, conn driver.Conn) (map[int]string, error) {
	rows, err := conn.Query(ctx, `SELECT version, any(name) FROM schema_migrations GROUP BY version`)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var (
			v    uint32
			name string
		)
		if err := rows.Scan(&v, &name); err != nil {
			return nil, fmt.Errorf("clickhouse: read schema_migrations: %w", err)
		}
		out[int(v)] = name
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("clickhouse: read schema_migrations: %w", err)
	}
	return out, nil
}
