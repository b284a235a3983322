package core

import (
	"context"
	"testing"
	"time"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

type testApps map[string][]byte

func (a testApps) AppSecret(org, appkey string) ([]byte, bool) {
	s, ok := a[org+"/"+appkey]
	return s, ok
}

// TestSystemUser checks the reserved sender of backends' messages: no
// device connects as it, even with a good token, and it writes to a group
// it is not a member of, which an ordinary non-member cannot.
func TestSystemUser(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	h := newHub(t, Config{Apps: testApps{"o/a": secret}})
	ctx := context.Background()
	tok := auth.Mint(secret, "o", "a", SystemUser, time.Now().Add(time.Hour))
	if _, err := h.Authenticate(ctx, &qimpb.Connect{Org: "o", Appkey: "a", User: SystemUser, Token: tok}); !hasCode(err, qimpb.Code_INVALID_ARGUMENT) {
		t.Fatalf("CONNECT as %s: %v, want INVALID_ARGUMENT", SystemUser, err)
	}
	res, err := h.Group(ctx, "o/a", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	gid := res.Group.Id
	if conv, err := h.Conversation(ctx, "o/a", SystemUser, "", gid); err != nil || conv != store.GroupConv(gid) {
		t.Fatalf("system to a group: %q, %v", conv, err)
	}
	if _, err := h.Conversation(ctx, "o/a", "mallory", "", gid); !hasCode(err, qimpb.Code_FORBIDDEN) {
		t.Fatalf("non-member to a group: %v, want FORBIDDEN", err)
	}
}

// TestCanRead checks who reads which conversation: the two users of a 1:1
// conversation, a group's current members, and the application itself.
func TestCanRead(t *testing.T) {
	h := newHub(t, Config{})
	ctx := context.Background()
	res, err := h.Group(ctx, "o/a", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_CREATE, Name: "g"})
	if err != nil {
		t.Fatal(err)
	}
	g := store.GroupConv(res.Group.Id)
	if _, err := h.Group(ctx, "o/a", "bob", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_JOIN, GroupId: res.Group.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Group(ctx, "o/a", "alice", &qimpb.GroupRequest{Op: qimpb.GroupOp_GROUP_KICK, GroupId: res.Group.Id, User: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		user, conv string
		want       qimpb.Code
	}{
		{"alice", "u:alice:bob", qimpb.Code_OK},
		{"bob", "u:alice:bob", qimpb.Code_OK},
		{"carol", "u:alice:bob", qimpb.Code_FORBIDDEN},
		{"", "u:alice:bob", qimpb.Code_OK},
		{"alice", g, qimpb.Code_OK},
		{"bob", g, qimpb.Code_FORBIDDEN}, // kicked
		{"carol", g, qimpb.Code_FORBIDDEN},
		{"", g, qimpb.Code_OK},
		{"alice", "g:nosuchgroup", qimpb.Code_NOT_FOUND},
		{"alice", "u:bob:alice", qimpb.Code_INVALID_ARGUMENT}, // out of order
		{"alice", "x:alice", qimpb.Code_INVALID_ARGUMENT},
		{"alice", "u:alice", qimpb.Code_INVALID_ARGUMENT},
	} {
		err := h.CanRead(ctx, "o/a", tt.user, tt.conv)
		if code, _ := CodeOf(err); code != tt.want {
			t.Errorf("CanRead(%q, %q) = %v, want %v", tt.user, tt.conv, err, tt.want)
		}
	}
}

// hasCode reports whether err maps to code (CodeOf).
func hasCode(err error, code qimpb.Code) bool {
	c, _ := CodeOf(err)
	return err != nil && c == code
}
