package pebblestore

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/qim-im/qim/store"
)

// TestGroupOldRecords opens groups written before members had join numbers
// (a version 1 group record without counters, 8-byte member values): they
// still decode, their size limit counts the old members, old members rank
// before every later joiner (by user id among themselves), and the last
// member's leaving closes them.
func TestGroupOldRecords(t *testing.T) {
	const app = "org/app"
	s := openT(t, t.TempDir(), Options{})
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()

	v1 := []byte{recordV1}
	v1 = appendString(v1, "g1")
	v1 = appendString(v1, "old group")
	v1 = appendString(v1, "owner")
	v1 = binary.AppendVarint(v1, 1700000000000)
	b := s.db.NewBatch()
	b.Set(groupKey(app, "g1"), v1, nil)
	for _, u := range []string{"owner", "zed", "mia"} {
		b.Set(memberKey(app, "g1", u), encodeU64(0), nil)
		b.Set(userGroupKey(app, u, "g1"), nil, nil)
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		t.Fatal(err)
	}

	if g, err := s.GetGroup(ctx, app, "g1"); err != nil || g.Owner != "owner" || g.Name != "old group" {
		t.Fatalf("GetGroup = %+v, %v", g, err)
	}
	if _, err := s.JoinGroup(ctx, app, "g1", "abe", 4); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	if _, err := s.JoinGroup(ctx, app, "g1", "bea", 4); !errors.Is(err, store.ErrFull) {
		t.Fatalf("JoinGroup beyond 4 members counting the old ones: %v, want ErrFull", err)
	}
	for _, tt := range []struct{ leaves, want string }{
		{"owner", "mia"}, // old members first, by id
		{"mia", "zed"},
		{"zed", "abe"}, // then the new joiner, despite the smaller id
		{"abe", ""},
	} {
		if got, err := s.LeaveGroup(ctx, app, "g1", tt.leaves); err != nil || got != tt.want {
			t.Fatalf("%s leaves: new owner %q, %v; want %q", tt.leaves, got, err, tt.want)
		}
	}
	if _, err := s.GetGroup(ctx, app, "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetGroup of the emptied group: %v, want ErrNotFound", err)
	}
}
