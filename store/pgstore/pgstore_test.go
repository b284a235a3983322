package pgstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/qim-im/qim/internal/pgtest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/storetest"
)

// testURL returns the URL of the test database, skipping the test if the
// database is unreachable, or failing it if QIM_REQUIRE_POSTGRES=1.
func testURL(t testing.TB) string {
	t.Helper()
	pgtest.Skip(t)
	return pgtest.URL()
}

// newSchema returns a schema name of its own for a test, dropped when the
// test ends. Stores opened on it must be closed first (cleanups run last
// registered first).
func newSchema(t testing.TB, dbURL string) string {
	t.Helper()
	schema := "qimtest_" + rand.Text()[:16]
	dropSchemaAtCleanup(t, dbURL, schema)
	return schema
}

// schemaOfDir returns the schema of a directory passed by
// storetest.RunReopen: the same dir gives the same schema.
func schemaOfDir(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return "qimtest_dir_" + hex.EncodeToString(h[:8])
}

func dropSchemaAtCleanup(t testing.TB, dbURL, schema string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
}

// openT opens a Store on schema; the caller closes it.
func openT(t testing.TB, dbURL, schema string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dbURL, Options{Schema: schema})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// withParam returns dbURL with a query parameter set.
func withParam(t testing.TB, dbURL, key, value string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", dbURL, err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestConformance(t *testing.T) {
	dbURL := testURL(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openT(t, dbURL, newSchema(t, dbURL))
	})
}

func TestReopen(t *testing.T) {
	dbURL := testURL(t)
	var once sync.Map // dirs whose schema is dropped at cleanup
	storetest.RunReopen(t, func(t *testing.T, dir string) store.Store {
		schema := schemaOfDir(dir)
		if _, loaded := once.LoadOrStore(dir, true); !loaded {
			dropSchemaAtCleanup(t, dbURL, schema)
		}
		return openT(t, dbURL, schema)
	})
}

// TestNonUTF8IDs checks what PostgreSQL refuses beyond the conformance
// suite: ids that are not UTF-8 (a text column cannot hold them).
func TestNonUTF8IDs(t *testing.T) {
	dbURL := testURL(t)
	s := openT(t, dbURL, newSchema(t, dbURL))
	defer s.Close()
	ctx := t.Context()
	for name, err := range map[string]error{
		"user not UTF-8":   s.AddContact(ctx, "org/app", "al\xffice", "bob"),
		"contact not UTF8": s.AddContact(ctx, "org/app", "alice", "\xc3"),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestBytesKept checks that client message ids and group names hold any
// bytes (NUL included, as proto strings allow), as with pebblestore.
func TestBytesKept(t *testing.T) {
	dbURL := testURL(t)
	s := openT(t, dbURL, newSchema(t, dbURL))
	defer s.Close()
	ctx := t.Context()
	a := func(id string) store.Append {
		return store.Append{App: "org/app", Conv: store.DirectConv("alice", "bob"), Members: []string{"alice", "bob"},
			Msg: testMessage("alice", "bob", id)}
	}
	first, err := s.Append(ctx, []store.Append{a("c\x00é1")})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	again, err := s.Append(ctx, []store.Append{a("c\x00é1"), a("c\x00é2")})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if !again[0].Duplicate || again[0].Msg.Id != first[0].Msg.Id || again[1].Duplicate {
		t.Errorf("binary client message ids: results %v", again)
	}
	g := store.Group{ID: "g1", Name: "n\x00\xfe", Owner: "alice", Created: 1}
	if err := s.CreateGroup(ctx, "org/app", g); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if got, err := s.GetGroup(ctx, "org/app", "g1"); err != nil || got != g {
		t.Errorf("GetGroup = %+v, %v; want %+v", got, err, g)
	}
}

// TestConcurrentOpen opens one schema from several Stores at once: the
// migrations are applied once, and every Store works.
func TestConcurrentOpen(t *testing.T) {
	dbURL := testURL(t)
	schema := newSchema(t, dbURL)
	const n = 6
	stores := make([]*Store, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := Open(t.Context(), dbURL, Options{Schema: schema, MaxConns: 2})
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			defer s.Close()
		}
	}
	if t.Failed() {
		return
	}
	var versions int
	err := stores[0].pool.QueryRow(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&versions)
	if err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if versions != len(ms) {
		t.Errorf("%d migrations recorded, want %d", versions, len(ms))
	}
	for i, s := range stores {
		if _, err := s.NextEpoch(t.Context(), "org/app", "alice", fmt.Sprint("d", i)); err != nil {
			t.Errorf("store %d: NextEpoch: %v", i, err)
		}
	}
}

// TestPruneDedupChunks prunes more entries than one chunk holds.
func TestPruneDedupChunks(t *testing.T) {
	dbURL := testURL(t)
	s := openT(t, dbURL, newSchema(t, dbURL))
	defer s.Close()
	s.pruneChunk = 7
	var msgs []store.Append
	for i := range 30 {
		msgs = append(msgs, store.Append{App: "org/app", Conv: store.DirectConv("alice", "bob"),
			Members: []string{"alice", "bob"}, Msg: testMessage("alice", "bob", fmt.Sprint("c", i))})
	}
	if _, err := s.Append(t.Context(), msgs); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if n, err := s.PruneDedup(t.Context(), time.Now().Add(time.Minute)); err != nil || n != 30 {
		t.Errorf("PruneDedup = %d, %v; want 30", n, err)
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
