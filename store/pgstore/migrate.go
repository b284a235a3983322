package pgstore

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles holds the schema migrations, one file per version, named
// NNNN_description.sql and applied in version order. A released file is
// never edited: a change to the schema is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one schema migration.
type migration struct {
	version int
	name    string // file name
	sql     string
}

// loadMigrations returns the embedded migrations in version order. It
// fails on a file whose name does not start with a version, on a version
// given twice and on a gap.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names { // fs.Glob sorts
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name does not start with a version", base)
		}
		if v != len(out)+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d", base, v, len(out)+1)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	return out, nil
}

// migrate creates schema if needed and applies the migrations it lacks, in
// one transaction holding an advisory lock on the schema's name, so that
// processes starting at once apply each migration once: the others wait
// for the lock, then find the versions recorded in schema_migrations.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string, logger *slog.Logger) error {
	migrations, err := loadMigrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey(schema)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		ident := pgx.Identifier{schema}.Sanitize()
		for _, stmt := range []string{
			"CREATE SCHEMA IF NOT EXISTS " + ident,
			"SET LOCAL search_path TO " + ident,
			`CREATE TABLE IF NOT EXISTS schema_migrations (
				version    integer PRIMARY KEY,
				name       text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now()
			)`,
		} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("prepare schema %s: %w", schema, err)
			}
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("schema %s is at version %d, newer than this build knows (%d)", schema, current, len(migrations))
		}
		for _, m := range migrations[current:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("record %s: %w", m.name, err)
			}
			logger.Info("pgstore: applied migration", "schema", schema, "migration", m.name)
		}
		return nil
	})
}

// migrationLockKey returns the advisory lock key of schema's migrations.
// Two schemas whose keys collide only wait for each other.
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("qim pgstore migrate\x00"))
	h.Write([]byte(schema))
	return int64(h.Sum64())
}
