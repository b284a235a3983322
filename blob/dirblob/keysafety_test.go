package dirblob_test

import (
	"bytes"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/blob/blobtest"
)

// payload is what the key-safety tests try to write; no file may ever hold
// it.
const payload = "PAYLOAD-THAT-MUST-NOT-LAND"

// escapeKeys are keys that try to name something outside the store's
// directory, or something of dirblob's own, on top of blobtest.InvalidKeys.
func escapeKeys() []string {
	keys := append(blobtest.InvalidKeys(),
		"../outside/secret",
		"../../etc/passwd",
		"store/../outside/x",
		"c/../../outside/x",
		"..,blob",
		"../outside/secret,blob",
		"/tmp/x",
		"//x",
		"c/\x00/x",
		"c/x\x00.png",
		"\x00../x",
		",lock",
		",tmp",
		",tmp/x",
		"c/x,blob",
		"x~",
		"c/%2e%2e/x",
		"c/\u2215x",    // division slash
		"\uff0e\uff0e", // fullwidth dots
		"c/\u202ex",    // right-to-left override
		"c/caf\u00e9",  // precomposed é
		"c/cafe\u0301", // e and a combining accent
		"\ufeffc/x",    // byte order mark
		strings.Repeat("a", 4096),
		strings.Repeat("../", 300),
		strings.Repeat("x/", 400)+"x",
	)
	return keys
}

// tree returns every path under root (relative to it) with its size, or
// -1 for a directory, and fails the test if a file holds payload.
func tree(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel] = -1
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[rel] = info.Size()
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, []byte(payload)) {
				t.Errorf("%s holds the payload", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// TestKeySafety checks that every method refuses every key that is not
// blob.ValidKey, and that nothing is written inside or outside the store's
// directory.
func TestKeySafety(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	if err := os.MkdirAll(filepath.Join(parent, "outside"), 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(parent, "outside", "secret,blob")
	if err := os.WriteFile(secret, []byte("qimblob1 6 text/plain\nsecret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	defer s.Close()
	put(t, s, "c/kept", "kept")
	before := tree(t, parent)

	ctx := t.Context()
	for _, key := range escapeKeys() {
		if blob.ValidKey(key) {
			t.Errorf("ValidKey(%q) = true", key)
			continue
		}
		err := s.Put(ctx, key, strings.NewReader(payload), int64(len(payload)), blob.Info{})
		if !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", key, err)
		}
		if rc, _, err := s.Get(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Get(%q): %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Stat(%q): %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", key, err)
		}
	}

	after := tree(t, parent)
	if !maps.Equal(before, after) {
		t.Errorf("files changed:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	if got := get(t, s, "c/kept"); got != "kept" {
		t.Errorf("c/kept = %q", got)
	}
}

// TestSymlinkEscape checks that a symbolic link planted inside the store's
// directory does not lead a valid key out of it.
func TestSymlinkEscape(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	outside := filepath.Join(parent, "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret,blob")
	if err := os.WriteFile(secret, []byte("qimblob1 6 text/plain\nsecret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	defer s.Close()
	for name, target := range map[string]string{
		"abs": outside,
		"rel": "../outside",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// A link to the object file itself.
	if err := os.Symlink(secret, filepath.Join(dir, "file,blob")); err != nil {
		t.Fatal(err)
	}
	before := tree(t, outside)

	ctx := t.Context()
	for _, key := range []string{"abs/secret", "rel/secret", "file"} {
		if rc, _, err := s.Get(ctx, key); err == nil {
			rc.Close()
			t.Errorf("Get(%q) through a link out of the directory succeeded", key)
		}
		if _, err := s.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) through a link out of the directory succeeded", key)
		}
	}
	for _, key := range []string{"abs/secret", "rel/secret", "abs/new", "rel/new/deeper"} {
		err := s.Put(ctx, key, strings.NewReader(payload), int64(len(payload)), blob.Info{})
		if err == nil {
			t.Errorf("Put(%q) through a link out of the directory succeeded", key)
		}
	}
	// Put replaces the link "file,blob" itself, inside the directory, and
	// Delete removes it: neither touches its target.
	put(t, s, "file", payload)
	for _, key := range []string{"abs/secret", "rel/secret", "file"} {
		_ = s.Delete(ctx, key)
	}
	if after := tree(t, outside); !maps.Equal(before, after) {
		t.Errorf("files outside changed:\nbefore %v\nafter  %v", before, after)
	}
	if b, err := os.ReadFile(secret); err != nil || !strings.HasSuffix(string(b), "secret") {
		t.Errorf("the file outside: %q, %v", b, err)
	}
}
