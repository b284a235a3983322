package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

func TestOneToOne(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	bob := dial(t, srv, "bob", "phone")

	ack, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "hello bob", ClientMsgID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetSeq() != 1 || ack.GetDuplicate() || ack.GetId() == 0 || ack.GetTimestamp() == 0 {
		t.Fatalf("ack = %v, want seq 1, an id and a timestamp", ack)
	}
	m := recv(t, bob, 1)[0]
	if m.GetFromUser() != "alice" || m.GetFromDevice() != "phone" || m.GetToUser() != "bob" ||
		m.GetSeq() != 1 || m.GetId() != ack.GetId() || m.GetTimestamp() != ack.GetTimestamp() ||
		m.GetClientMsgId() != "c1" || client.Text(m) != "hello bob" {
		t.Fatalf("bob got %v", m)
	}
	if got := client.ConvOf("bob", m); got != client.ToUser("alice") {
		t.Fatalf("ConvOf(bob) = %v", got)
	}

	// The answer comes back on the stream alice opened.
	send(t, bob, client.ToUser("alice"), "hi alice")
	m = recv(t, alice, 1)[0]
	if m.GetSeq() != 2 || client.Text(m) != "hi alice" || client.ConvOf("alice", m) != client.ToUser("bob") {
		t.Fatalf("alice got %v", m)
	}

	ack, err = alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{ImageURL: "https://example.com/cat.png"})
	if err != nil {
		t.Fatal(err)
	}
	m = recv(t, bob, 1)[0]
	if m.GetType() != qimpb.MessageType_IMAGE || client.ImageURL(m) != "https://example.com/cat.png" ||
		client.Text(m) != "" || m.GetSeq() != 3 || len(m.GetClientMsgId()) != 32 {
		t.Fatalf("bob got %v (ack %v)", m, ack)
	}

	// An unstored message: seq 0, delivered to the online device.
	ack, err = alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "typing", NoOffline: true})
	if err != nil {
		t.Fatal(err)
	}
	if ack.GetSeq() != 0 {
		t.Fatalf("NoOffline ack = %v, want seq 0", ack)
	}
	if m = recv(t, bob, 1)[0]; m.GetSeq() != 0 || client.Text(m) != "typing" {
		t.Fatalf("bob got %v", m)
	}
	quiet(t, alice)
}

func TestSendToSelf(t *testing.T) {
	srv := startServer(t)
	phone := dial(t, srv, "alice", "phone")
	laptop := dial(t, srv, "alice", "laptop")
	ack := send(t, phone, client.ToUser("alice"), "note to self")
	m := recv(t, laptop, 1)[0]
	if m.GetSeq() != ack.GetSeq() || client.ConvOf("alice", m) != client.ToUser("alice") {
		t.Fatalf("laptop got %v", m)
	}
	quiet(t, phone)
}

func TestOfflineBacklogInOrder(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	const n = 100 // more than the server's 64 messages in flight
	for i := 1; i <= n; i++ {
		send(t, alice, client.ToUser("bob"), fmt.Sprintf("m%d", i))
	}

	bob, err := client.Dial(ctxT(t), config(srv, "bob", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range recv(t, bob, n) {
		if m.GetSeq() != uint64(i+1) || client.Text(m) != fmt.Sprintf("m%d", i+1) {
			t.Fatalf("message %d: %v", i, m)
		}
	}
	bob.Close()
	if err := bob.Err(); err != nil {
		t.Fatalf("Err after Close = %v", err)
	}
	if _, ok := <-bob.Messages(); ok {
		t.Fatal("Messages not closed after Close")
	}

	// Everything was acknowledged: the same device gets only what is new.
	send(t, alice, client.ToUser("bob"), "later")
	bob = dial(t, srv, "bob", "phone")
	if m := recv(t, bob, 1)[0]; m.GetSeq() != n+1 || client.Text(m) != "later" {
		t.Fatalf("after reconnecting bob got %v", m)
	}
	quiet(t, bob)

	// A device the server has not seen gets the conversation from the start.
	tablet := dial(t, srv, "bob", "tablet")
	if got := recv(t, tablet, n+1); got[0].GetSeq() != 1 || got[n].GetSeq() != n+1 {
		t.Fatalf("tablet got seqs %d..%d", got[0].GetSeq(), got[n].GetSeq())
	}
}

func TestSlowReceiver(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	cfg := config(srv, "bob", "phone")
	cfg.Inbox = -1 // unbuffered: every push waits for the test
	bob := dialConfig(t, cfg)
	carol := dial(t, srv, "carol", "phone")

	const n = 150
	for i := 1; i <= n; i++ {
		send(t, alice, client.ToUser("bob"), fmt.Sprintf("m%d", i))
	}
	// bob reads nothing yet; another conversation is not held up on the
	// server, and bob's own requests still work.
	send(t, carol, client.ToUser("alice"), "independent")
	recv(t, alice, 1)
	if _, err := bob.Contacts(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for i, m := range recv(t, bob, n) {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.GetSeq())
		}
	}
}

func TestManyConversations(t *testing.T) {
	// More conversations than quic-go's default of 100 incoming streams:
	// the server opens a stream for each.
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	// Invitations from a contact are not limited (PROTOCOL.md section 8).
	bobCfg := config(srv, "bob", "setup")
	bobCfg.SendOnly = true
	if err := dialConfig(t, bobCfg).AddContact(ctxT(t), "alice"); err != nil {
		t.Fatal(err)
	}
	const n = 150
	for i := range n {
		g, err := alice.CreateGroup(ctxT(t), fmt.Sprint("g", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.Invite(ctxT(t), g.GetId(), "bob"); err != nil {
			t.Fatal(err)
		}
		send(t, alice, client.ToGroup(g.GetId()), "hi")
	}
	bob := dial(t, srv, "bob", "phone")
	convs := make(map[client.Peer]bool)
	for _, m := range recv(t, bob, n) {
		convs[client.ConvOf("bob", m)] = true
	}
	if len(convs) != n {
		t.Fatalf("messages from %d conversations, want %d", len(convs), n)
	}
}

func TestConcurrentSends(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	bob := dial(t, srv, "bob", "phone")
	const n = 50
	var wg sync.WaitGroup
	seqs := make([]uint64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ack, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: fmt.Sprint(i)})
			seqs[i], errs[i] = ack.GetSeq(), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("seqs = %v, want 1..%d", seqs, n)
		}
	}
	for i, m := range recv(t, bob, n) {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.GetSeq())
		}
	}
}

func TestGroupFanOut(t *testing.T) {
	srv := startServer(t)
	owner := dial(t, srv, "u00", "phone")
	g, err := owner.CreateGroup(ctxT(t), "twenty")
	if err != nil {
		t.Fatal(err)
	}
	if g.GetId() == "" || g.GetName() != "twenty" || g.GetOwner() != "u00" {
		t.Fatalf("CreateGroup = %v", g)
	}
	members := []*client.Client{owner}
	for i := 1; i < 20; i++ {
		user := fmt.Sprintf("u%02d", i)
		if err := owner.Invite(ctxT(t), g.GetId(), user); err != nil {
			t.Fatalf("Invite %s: %v", user, err)
		}
		members = append(members, dial(t, srv, user, "phone"))
	}
	got, err := owner.Members(ctxT(t), g.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 || !slices.IsSorted(got) {
		t.Fatalf("Members = %v", got)
	}

	const n = 5
	for i := 1; i <= n; i++ {
		send(t, owner, client.ToGroup(g.GetId()), fmt.Sprintf("g%d", i))
	}
	var wg sync.WaitGroup
	for _, c := range members[1:] {
		wg.Go(func() {
			for i, m := range recv(t, c, n) {
				if m.GetSeq() != uint64(i+1) || m.GetToGroup() != g.GetId() || m.GetFromUser() != "u00" ||
					client.ConvOf(c.User(), m) != client.ToGroup(g.GetId()) {
					t.Errorf("%s: message %d: %v", c.User(), i, m)
				}
			}
		})
	}
	wg.Wait()
	quiet(t, owner) // the sending device has the ack instead

	// A member's message reaches everyone else, the owner included.
	send(t, members[7], client.ToGroup(g.GetId()), "from u07")
	for i, c := range members {
		if i == 7 {
			continue
		}
		if m := recv(t, c, 1)[0]; m.GetSeq() != n+1 || m.GetFromUser() != "u07" {
			t.Fatalf("%s got %v", c.User(), m)
		}
	}

	groups, err := members[3].Groups(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0].GetId() != g.GetId() || groups[0].GetLastSeq() != n+1 {
		t.Fatalf("Groups = %v", groups)
	}
}

func TestHistory(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	g, err := alice.CreateGroup(ctxT(t), "history")
	if err != nil {
		t.Fatal(err)
	}
	to := client.ToGroup(g.GetId())
	for i := 1; i <= 30; i++ {
		send(t, alice, to, fmt.Sprintf("h%d", i))
	}
	for _, tt := range []struct {
		name          string
		before        uint64
		limit         int
		first, length int
	}{
		{"latest", 0, 10, 21, 10},
		{"page back", 21, 10, 11, 10},
		{"default limit", 0, 0, 1, 30},
		{"short last page", 4, 10, 1, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := alice.History(ctxT(t), g.GetId(), tt.before, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != tt.length {
				t.Fatalf("got %d messages, want %d", len(msgs), tt.length)
			}
			for i, m := range msgs {
				if want := uint64(tt.first + i); m.GetSeq() != want || client.Text(m) != fmt.Sprintf("h%d", want) {
					t.Fatalf("message %d: %v, want seq %d", i, m, want)
				}
			}
		})
	}

	// A member who joins later gets new messages by push, earlier ones by
	// history.
	bob := dial(t, srv, "bob", "phone")
	if _, err := bob.JoinGroup(ctxT(t), g.GetId()); err != nil {
		t.Fatal(err)
	}
	send(t, alice, to, "after join")
	if m := recv(t, bob, 1)[0]; m.GetSeq() != 31 {
		t.Fatalf("bob got %v", m)
	}
	quiet(t, bob)
}

func TestMultiDevice(t *testing.T) {
	srv := startServer(t)
	phone := dial(t, srv, "alice", "phone")
	laptop := dial(t, srv, "alice", "laptop")
	bob := dial(t, srv, "bob", "phone")

	send(t, bob, client.ToUser("alice"), "to both")
	for _, c := range []*client.Client{phone, laptop} {
		if m := recv(t, c, 1)[0]; client.Text(m) != "to both" || client.ConvOf("alice", m) != client.ToUser("bob") {
			t.Fatalf("%s got %v", c.Device(), m)
		}
	}

	send(t, phone, client.ToUser("bob"), "from phone")
	if m := recv(t, bob, 1)[0]; m.GetFromDevice() != "phone" {
		t.Fatalf("bob got %v", m)
	}
	m := recv(t, laptop, 1)[0] // the sender's other device
	if client.Text(m) != "from phone" || m.GetFromUser() != "alice" || client.ConvOf("alice", m) != client.ToUser("bob") {
		t.Fatalf("laptop got %v", m)
	}
	quiet(t, phone)
}

func TestReplaced(t *testing.T) {
	srv := startServer(t)
	first := dial(t, srv, "alice", "phone")
	second := dial(t, srv, "alice", "phone")
	select {
	case <-first.Done():
	case <-time.After(waitTime):
		t.Fatal("first session not ended")
	}
	wantCode(t, first.Err(), qimpb.Code_REPLACED)
	_, err := first.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: "x"})
	wantCode(t, err, qimpb.Code_REPLACED)
	send(t, second, client.ToUser("bob"), "still here")
}

func TestSendOnly(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "bob", "script")
	cfg.SendOnly = true
	script := dialConfig(t, cfg)
	alice := dial(t, srv, "alice", "phone")
	send(t, alice, client.ToUser("bob"), "not for scripts")
	send(t, script, client.ToUser("alice"), "from a script")
	recv(t, alice, 1)
	quiet(t, script)
}

func TestContacts(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	ctx := ctxT(t)
	for _, u := range []string{"carol", "bob", "bob"} {
		if err := alice.AddContact(ctx, u); err != nil {
			t.Fatalf("AddContact %s: %v", u, err)
		}
	}
	if got, err := alice.Contacts(ctx); err != nil || !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("Contacts = %v, %v", got, err)
	}
	for range 2 {
		if err := alice.RemoveContact(ctx, "carol"); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := alice.Contacts(ctx); err != nil || !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("Contacts = %v, %v", got, err)
	}
	// Contacts are per user, not per device.
	laptop := dial(t, srv, "alice", "laptop")
	if got, err := laptop.Contacts(ctx); err != nil || !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("Contacts on laptop = %v, %v", got, err)
	}
	bob := dial(t, srv, "bob", "phone")
	if got, err := bob.Contacts(ctx); err != nil || len(got) != 0 {
		t.Fatalf("bob's Contacts = %v, %v", got, err)
	}
	wantCode(t, alice.AddContact(ctx, "not a valid id!"), qimpb.Code_INVALID_ARGUMENT)
}

func TestGroupPermissions(t *testing.T) {
	srv := startServer(t)
	owner := dial(t, srv, "owner", "phone")
	bob := dial(t, srv, "bob", "phone")
	mallory := dial(t, srv, "mallory", "phone")
	ctx := ctxT(t)
	g, err := owner.CreateGroup(ctx, "club")
	if err != nil {
		t.Fatal(err)
	}
	id := g.GetId()
	if _, err := bob.JoinGroup(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := owner.Invite(ctx, id, "carol"); err != nil {
		t.Fatal(err)
	}

	sendErr := func(c *client.Client) error {
		_, err := c.Send(ctx, client.ToGroup(id), client.Outgoing{Text: "hi"})
		return err
	}
	historyErr := func(c *client.Client) error {
		_, err := c.History(ctx, id, 0, 10)
		return err
	}
	membersErr := func(c *client.Client) error {
		_, err := c.Members(ctx, id)
		return err
	}
	for _, tt := range []struct {
		name string
		err  error
		want qimpb.Code
	}{
		{"non-member sends", sendErr(mallory), qimpb.Code_FORBIDDEN},
		{"non-member reads history", historyErr(mallory), qimpb.Code_FORBIDDEN},
		{"non-member lists members", membersErr(mallory), qimpb.Code_FORBIDDEN},
		{"non-member invites", mallory.Invite(ctx, id, "mallory2"), qimpb.Code_FORBIDDEN},
		{"non-member kicks", mallory.Kick(ctx, id, "bob"), qimpb.Code_FORBIDDEN},
		{"member kicks", bob.Kick(ctx, id, "carol"), qimpb.Code_FORBIDDEN},
		{"no such group", sendErrTo(ctx, owner, "no-such-group"), qimpb.Code_NOT_FOUND},
		{"join no such group", joinErr(ctx, owner, "no-such-group"), qimpb.Code_NOT_FOUND},
	} {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.err, tt.want) })
	}

	// A member may send, and a refused request does not harm the session.
	if err := sendErr(bob); err != nil {
		t.Fatal(err)
	}
	recv(t, owner, 1)

	// The owner kicks bob: no more sends, history or pushes, and no rejoin.
	if err := owner.Kick(ctx, id, "bob"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, sendErr(bob), qimpb.Code_FORBIDDEN)
	wantCode(t, historyErr(bob), qimpb.Code_FORBIDDEN)
	wantCode(t, joinErr(ctx, bob, id), qimpb.Code_FORBIDDEN)
	send(t, owner, client.ToGroup(id), "bob is gone")
	quiet(t, bob)
	if got, err := owner.Members(ctx, id); err != nil || !slices.Equal(got, []string{"carol", "owner"}) {
		t.Fatalf("Members = %v, %v", got, err)
	}

	// Only the owner's invitation lifts the ban.
	if err := owner.Invite(ctx, id, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := sendErr(bob); err != nil {
		t.Fatalf("after re-invite: %v", err)
	}

	// When the owner leaves, the earliest remaining joiner becomes owner:
	// carol, since bob's re-invitation made him join again after her.
	if err := owner.LeaveGroup(ctx, id); err != nil {
		t.Fatal(err)
	}
	wantCode(t, sendErr(owner), qimpb.Code_FORBIDDEN)
	groups, err := bob.Groups(ctx)
	if err != nil || len(groups) != 1 {
		t.Fatalf("Groups = %v, %v", groups, err)
	}
	if o := groups[0].GetOwner(); o != "carol" {
		t.Fatalf("owner after leave = %q, want carol", o)
	}
}

func sendErrTo(ctx context.Context, c *client.Client, group string) error {
	_, err := c.Send(ctx, client.ToGroup(group), client.Outgoing{Text: "hi"})
	return err
}

func joinErr(ctx context.Context, c *client.Client, group string) error {
	_, err := c.JoinGroup(ctx, group)
	return err
}

func TestRetriedSendDedups(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	bob := dial(t, srv, "bob", "phone")
	out := client.Outgoing{Text: "once", ClientMsgID: "retry-1"}
	first, err := alice.Send(ctxT(t), client.ToUser("bob"), out)
	if err != nil {
		t.Fatal(err)
	}
	// A retry from another session of the same user, as after a crash.
	laptop := dial(t, srv, "alice", "laptop")
	for _, c := range []*client.Client{alice, laptop} {
		again, err := c.Send(ctxT(t), client.ToUser("bob"), out)
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetDuplicate() || again.GetId() != first.GetId() || again.GetSeq() != first.GetSeq() ||
			again.GetTimestamp() != first.GetTimestamp() {
			t.Fatalf("retry ack = %v, first %v", again, first)
		}
	}
	recv(t, bob, 1)
	quiet(t, bob)
}

func TestInvalidMessages(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	ctx := ctxT(t)
	for _, tt := range []struct {
		name string
		to   client.Peer
		out  client.Outgoing
	}{
		{"empty text", client.ToUser("bob"), client.Outgoing{}},
		{"text too long", client.ToUser("bob"), client.Outgoing{Text: strings.Repeat("x", 4097)}},
		{"bad url", client.ToUser("bob"), client.Outgoing{ImageURL: "ftp://x"}},
		{"bad user id", client.ToUser("bob smith"), client.Outgoing{Text: "hi"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := alice.Send(ctx, tt.to, tt.out)
			wantCode(t, err, qimpb.Code_INVALID_ARGUMENT)
		})
	}
	if _, err := alice.Send(ctx, client.Peer{}, client.Outgoing{Text: "hi"}); err == nil {
		t.Fatal("Send to an empty Peer succeeded")
	}
	// The stream of bob is still usable.
	send(t, alice, client.ToUser("bob"), "fine")
}

func TestFrameLimits(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{MaxFrame: 1024})
	alice := dial(t, srv, "alice", "phone")
	if got := alice.Connected().GetMaxFrame(); got != 1024 {
		t.Fatalf("max_frame = %d", got)
	}
	_, err := alice.Send(ctxT(t), client.ToUser("bob"), client.Outgoing{Text: strings.Repeat("x", 2000)})
	if !errors.Is(err, qimpb.ErrFrameTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
	send(t, alice, client.ToUser("carol"), "small")

	// A frame from the server over the client's MaxFrame ends that stream
	// only.
	cfg := config(srv, "bob", "phone")
	cfg.MaxFrame = 200
	bob := dialConfig(t, cfg)
	send(t, alice, client.ToUser("bob"), strings.Repeat("x", 500))
	quiet(t, bob)
	if _, err := bob.Contacts(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bob.Done():
		t.Fatalf("session ended: %v", bob.Err())
	default:
	}
}

func TestLargeHistory(t *testing.T) {
	// 20 texts of 4,000 bytes: the answer is larger than the default
	// maximum frame.
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	g, err := alice.CreateGroup(ctxT(t), "big")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		send(t, alice, client.ToGroup(g.GetId()), strings.Repeat(fmt.Sprint(i%10), 4000))
	}
	// A page fits in one frame: it holds the latest messages that fit, and
	// paging back from its oldest gets the rest.
	var all []*qimpb.Message
	before := uint64(0)
	for len(all) < 20 {
		msgs, err := alice.History(ctxT(t), g.GetId(), before, 20-len(all))
		if err != nil {
			t.Fatalf("History of 80 KB: %v", err)
		}
		if len(msgs) == 0 || len(msgs) == 20 {
			t.Fatalf("History page of %d messages (after %d)", len(msgs), len(all))
		}
		all = append(msgs, all...)
		before = msgs[0].GetSeq()
	}
	for i, m := range all {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.GetSeq())
		}
	}
}

func TestDialRefused(t *testing.T) {
	srv := startServer(t)
	for _, tt := range []struct {
		name string
		cfg  func(*client.Config)
		want qimpb.Code
	}{
		{"bad token", func(c *client.Config) { c.Token = "v1.123.abc" }, qimpb.Code_UNAUTHENTICATED},
		{"other user's token", func(c *client.Config) { c.Token = srv.Token("bob") }, qimpb.Code_UNAUTHENTICATED},
		{"expired token", func(c *client.Config) { c.Token = srv.TokenFor("demo", "demo", "alice", -time.Minute) }, qimpb.Code_TOKEN_EXPIRED},
		{"unknown app", func(c *client.Config) { c.Appkey = "nope" }, qimpb.Code_UNAUTHENTICATED},
		{"bad user id", func(c *client.Config) { c.User = "a b"; c.Token = srv.Token("a b") }, qimpb.Code_INVALID_ARGUMENT},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(srv, "alice", "phone")
			tt.cfg(&cfg)
			c, err := client.Dial(ctxT(t), cfg)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			wantCode(t, err, tt.want)
		})
	}
}

func TestDialCancelled(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := client.Dial(ctx, config(srv, "alice", "phone")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a cancelled context: %v", err)
	}
}

func TestServerGoingAway(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	srv.Shutdown()
	select {
	case <-alice.Done():
	case <-time.After(waitTime):
		t.Fatal("session not ended")
	}
	wantCode(t, alice.Err(), qimpb.Code_GOING_AWAY)
	if _, ok := <-alice.Messages(); ok {
		t.Fatal("Messages not closed")
	}
}

func TestServerLost(t *testing.T) {
	srv := startServer(t)
	cfg := config(srv, "alice", "phone")
	cfg.QUICConfig = &quic.Config{MaxIdleTimeout: 500 * time.Millisecond}
	alice := dialConfig(t, cfg)
	srv.Stop()
	select {
	case <-alice.Done():
	case <-time.After(waitTime):
		t.Fatal("session not ended")
	}
	if alice.Err() == nil {
		t.Fatal("Err = nil after the server went away")
	}
	if _, err := alice.Contacts(ctxT(t)); err == nil {
		t.Fatal("request on an ended session succeeded")
	}
}

func TestCloseUnblocksRequests(t *testing.T) {
	srv := startServer(t)
	alice := dial(t, srv, "alice", "phone")
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for {
				if _, err := alice.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "x"}); err != nil {
					if !errors.Is(err, client.ErrClosed) {
						t.Errorf("Send after Close: %v", err)
					}
					return
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	alice.Close()
	wg.Wait()
	alice.Close() // idempotent
	if err := alice.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	srv := startServer(t)
	// A first session makes the server start everything it starts lazily.
	warm, err := client.Dial(ctxT(t), config(srv, "warm", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	ignore := goleak.IgnoreCurrent()
	alice, err := client.Dial(ctxT(t), config(srv, "alice", "phone"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config(srv, "bob", "phone")
	cfg.Inbox = -1
	bob, err := client.Dial(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g, err := alice.CreateGroup(ctxT(t), "g")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Invite(ctxT(t), g.GetId(), "bob"); err != nil {
		t.Fatal(err)
	}
	send(t, alice, client.ToUser("bob"), "1")
	send(t, alice, client.ToGroup(g.GetId()), "2")
	// bob leaves one message unread: its reader is blocked on Messages.
	send(t, alice, client.ToUser("bob"), "3")
	recv(t, bob, 2)
	alice.Close()
	bob.Close()
	goleak.VerifyNone(t, ignore)
}
