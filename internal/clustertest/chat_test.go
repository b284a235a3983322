package clustertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestClusterChat has users on three nodes chat 1:1 and in a 50-member
// group spread over the nodes, with senders on several nodes at once, and
// checks with each receiving device that it got every message of each
// conversation exactly once, in order, with the seqs of the conversation
// dense once its own messages are counted in.
//
// The receivers that matter most never send: a device that sends learns of
// new seqs from its own messages (routed on its node) and reads the rest
// from the store, which would hide a router that loses other nodes'
// events. So in the 1:1 ring each user writes to the next and only hears
// from the previous, on another node; in the group's first round the
// senders are on nodes 0 and 1, and the members on node 2 only listen. A
// second round then has two senders on every node at once.
func TestClusterChat(t *testing.T) {
	// No periodic catch-up pass during the test: what other nodes commit
	// reaches the devices through the router or not at all.
	c := startCluster(t, 3, testserver.Options{SendRate: -1, CatchUpEvery: time.Hour})
	const perPeer, groupSize, perSender = 30, 50, 20

	// 1:1: alice, bob and carol, each on their own node, in a ring: alice
	// writes to bob, bob to carol, carol to alice.
	users := []string{"alice", "bob", "carol"}
	pair := make([]*client.Client, len(users))
	for i, u := range users {
		pair[i] = dial(t, c, i, u, "phone")
	}
	// The group: member j on node j%3; the first six members on nodes 0
	// and 1 write.
	members := make([]*client.Client, groupSize)
	for j := range members {
		members[j] = dial(t, c, j%3, fmt.Sprintf("m%02d", j), "phone")
	}
	g, err := members[0].CreateGroup(ctxT(t), "spread")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members[1:] {
		if err := members[0].Invite(ctxT(t), g.Id, m.User()); err != nil {
			t.Fatal(err)
		}
	}

	var senders []*client.Client
	for j, m := range members {
		if j%3 != 2 && len(senders) < 6 {
			senders = append(senders, m)
		}
	}
	// Let every session's one catch-up pass after connecting (1 s) go by:
	// what arrives from now on comes through the router.
	time.Sleep(1500 * time.Millisecond)

	var wg sync.WaitGroup
	var mu sync.Mutex
	sentSeqs := make(map[string][]uint64) // by "sender conv"
	send := func(cl *client.Client, to client.Peer, n int) {
		for k := range n {
			ack, err := cl.Send(ctxT(t), to, client.Outgoing{Text: fmt.Sprintf("%s %d", cl.User(), k)})
			if err != nil {
				t.Errorf("%s to %v: %v", cl.User(), to, err)
				return
			}
			mu.Lock()
			key := cl.User() + " " + to.String()
			sentSeqs[key] = append(sentSeqs[key], ack.Seq)
			mu.Unlock()
		}
	}
	for i, cl := range pair {
		next := users[(i+1)%len(users)]
		wg.Go(func() { send(cl, client.ToUser(next), perPeer) })
	}
	for _, cl := range senders {
		wg.Go(func() { send(cl, client.ToGroup(g.Id), perSender) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Each 1:1 device: from the previous in the ring, perPeer messages,
	// seqs 1..perPeer, in order, once.
	for i, cl := range pair {
		prev := users[(i+len(users)-1)%len(users)]
		got := collect(t, cl, perPeer, waitTime)
		for _, m := range got {
			if m.FromUser != prev {
				t.Fatalf("%s: message from %s, want only %s's", cl.User(), m.FromUser, prev)
			}
		}
		checkConv(t, cl.User()+" from "+prev, got, dense(perPeer))
		quiet(t, cl, 200*time.Millisecond)
	}
	// Each member: every group message but its own, once, in order.
	total := len(senders) * perSender
	conv := client.ToGroup(g.Id).String()
	for j, cl := range members {
		own := sentSeqs[cl.User()+" "+conv]
		got := collect(t, cl, total-len(own), waitTime)
		checkOwnAndReceived(t, fmt.Sprintf("member %s (node %d)", cl.User(), j%3), got, own, 0, total)
	}
	for _, cl := range members {
		quiet(t, cl, 50*time.Millisecond)
	}

	// Second round: two senders on each node at once.
	round2 := members[:6] // nodes 0, 1, 2, 0, 1, 2
	sentSeqs = make(map[string][]uint64)
	for _, cl := range round2 {
		wg.Go(func() { send(cl, client.ToGroup(g.Id), perSender) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total2 := len(round2) * perSender
	for j, cl := range members {
		own := sentSeqs[cl.User()+" "+conv]
		got := collect(t, cl, total2-len(own), waitTime)
		checkOwnAndReceived(t, fmt.Sprintf("member %s (node %d), second round", cl.User(), j%3), got, own, total, total2)
	}
	for _, cl := range members {
		quiet(t, cl, 50*time.Millisecond)
	}
}

// checkOwnAndReceived checks that a device received each message of a
// conversation once, in order, and that with its own (own, the seqs its
// sends were acknowledged with) they are the conversation's seqs
// after+1..after+total.
func checkOwnAndReceived(t *testing.T, who string, got []*qimpb.Message, own []uint64, after, total int) {
	t.Helper()
	var seqs []uint64
	for _, m := range got {
		if n := len(seqs); n > 0 && m.Seq <= seqs[n-1] {
			t.Fatalf("%s: seq %d after %d (received %v)", who, m.Seq, seqs[n-1], seqs)
		}
		seqs = append(seqs, m.Seq)
	}
	all := slices.Sorted(slices.Values(append(slices.Clone(seqs), own...)))
	want := dense(total)
	for i := range want {
		want[i] += uint64(after)
	}
	if !slices.Equal(all, want) {
		t.Fatalf("%s: received %v and sent %v, want together %d..%d once each", who, seqs, own, after+1, after+total)
	}
}
