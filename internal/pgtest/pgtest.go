// Package pgtest gives tests a PostgreSQL database of their own on the test
// server named by QIM_TEST_POSTGRES.
//
// Tests that need PostgreSQL skip, saying so, when the server is not
// reachable, and fail instead when QIM_REQUIRE_POSTGRES=1 (as in CI), so
// that a machine without PostgreSQL cannot pass them by accident.
package pgtest

import (
	"context"
	"github.com/qim-im/qim/internal/pgdb"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the test server's address when QIM_TEST_POSTGRES is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// URL returns the address of the test server: QIM_TEST_POSTGRES or
// DefaultURL.
func URL() string {
	if u := os.Getenv("QIM_TEST_POSTGRES"); u != "" {
		return u
	}
	return DefaultURL
}

// Required reports whether tests must fail rather than skip without
// PostgreSQL (QIM_REQUIRE_POSTGRES=1).
func Required() bool { return os.Getenv("QIM_REQUIRE_POSTGRES") == "1" }

// Check connects to the test server and returns why it cannot, or nil.
func Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, URL())
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.Ping(ctx)
}

// Skip skips t, or fails it when Required, if the test server is not
// reachable.
func Skip(t testing.TB) {
	t.Helper()
	if err := Check(context.Background()); err != nil {
		if Required() {
			t.Fatalf("PostgreSQL at %s is required (QIM_REQUIRE_POSTGRES=1): %v", URL(), err)
		}
		t.Skipf("PostgreSQL at %s not reachable, skipping (set QIM_REQUIRE_POSTGRES=1 to fail instead): %v", URL(), err)
	}
}

// Database creates a new, empty database on the test server and returns its
// URL; the database is dropped when the test ends. It skips or fails t as
// Skip does when the server is not reachable.
func Database(t testing.TB) string {
	t.Helper()
	Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, drop, err := pgdb.Create(ctx, URL(), "qimtest_")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dbURL
}
