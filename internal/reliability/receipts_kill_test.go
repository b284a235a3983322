package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// TestReceiptsKill9 kills qimd with SIGKILL at random moments while alice's
// device a1 sends to bob, whose devices b1 and b2 read each message they
// are shown (READ of the seq they got), and alice's two devices follow the
// receipts. All four devices reconnect by themselves. Checked, with the
// devices that were there throughout:
//
//   - an answered READ is durable: every Connected().Inbox of a
//     reconnection holds a read cursor (bob) and peer_read (alice) at
//     least the highest READ answered before that reconnection began, and
//     so does Inbox once the kills are over; no cursor is past what was
//     asked;
//   - bob's devices agree on the unread count, last_seq - read_seq;
//   - per device, the Receipt events of each user and conversation never
//     go backwards (the reconnections' receipts from Connected().Inbox
//     included), and whatever a reconnection's Connected().Inbox taught
//     the client reached the program, as an event or through its own calls;
//   - every message acknowledged to alice reached b1, b2 and a2 (the
//     sender's other device) once, in order;
//   - after the last restart, b1's READ reaches b2 as an event, and alice
//     learns that bob received and read the last message: a1 by events,
//     a2 (in the background meanwhile) by the receipts of its
//     reconnection, both by Inbox.
//
// QIM_CRASH_SEED replays a run's kill schedule.
func TestReceiptsKill9(t *testing.T) {
	const kills = 5
	const final = 10 // messages sent after the last restart
	rng := crashRand(t)
	conv := store.DirectConv("alice", "bob")

	p := newQimd(t, qimdBin.Path(t), t.TempDir(), freeUDPAddr(t))
	begin := time.Now() // the binary built
	p.start()
	var answered atomic.Uint64 // the highest read_seq answered to a device of bob
	tokens := map[string]string{"alice": p.token("alice"), "bob": p.token("bob")}
	dial := func(user, device, peer string) *receiptDevice {
		cfg := p.config(user, tokens[user], device)
		cfg.Reconnect = true
		cfg.ReconnectMax = 300 * time.Millisecond
		// Noticing a killed server sooner: each kill is to hit sessions.
		cfg.QUICConfig.MaxIdleTimeout = time.Second
		cfg.QUICConfig.KeepAlivePeriod = 250 * time.Millisecond
		return newReceiptDevice(t, cfg, peer, &answered)
	}
	a1, a2 := dial("alice", "a1", "bob"), dial("alice", "a2", "bob")
	b1, b2 := dial("bob", "b1", "alice"), dial("bob", "b2", "alice")
	devices := []*receiptDevice{a1, a2, b1, b2}
	bobs := []*receiptDevice{b1, b2}

	stopSend, stopRead := make(chan struct{}), make(chan struct{})
	stopSending := sync.OnceFunc(func() { close(stopSend) })
	stopReading := sync.OnceFunc(func() { close(stopRead) })
	var sending, reading sync.WaitGroup
	t.Cleanup(func() { // on a failure: after the sender's, before the clients' cleanups
		stopSending()
		stopReading()
		sending.Wait()
		reading.Wait()
	})
	sender := newReceiptSender(t, a1.c, "bob")
	sending.Go(func() { sender.run(stopSend, 10*time.Millisecond) })
	for _, d := range bobs {
		reading.Go(func() { d.readLoop(stopRead) })
	}
	reads := func() int64 { return b1.answeredReads.Load() + b2.answeredReads.Load() }
	connected := func(n int64) bool {
		for _, d := range devices {
			if d.conns.Load() < n {
				return false
			}
		}
		return true
	}
	for k := range kills {
		// Each server stores messages and answers READs, with every
		// device connected to it, before it is killed at a random moment.
		mark, readMark := sender.acks.Load(), reads()
		eventually(t, 30*time.Second, func() string {
			return fmt.Sprintf("acks (%d, mark %d), answered READs (%d, mark %d) and every device connected (%s) after restart %d",
				sender.acks.Load(), mark, reads(), readMark, connCounts(devices), k)
		}, func() bool { return sender.acks.Load() >= mark+10 && reads() >= readMark+4 && connected(int64(k+1)) })
		time.Sleep(time.Duration(rng.Int64N(int64(800 * time.Millisecond))))
		before := answered.Load()
		p.kill()
		killed := time.Now()
		time.Sleep(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
		p.start()
		t.Logf("kill %d at %v: %d messages acknowledged, %d READs answered (b1 %d, b2 %d; slowest %v, %v), read cursor answered %d; answering again after %v",
			k+1, killed.Sub(begin).Round(time.Millisecond), sender.acks.Load(), reads(), b1.answeredReads.Load(), b2.answeredReads.Load(),
			time.Duration(b1.slowest.Load()), time.Duration(b2.slowest.Load()), before, time.Since(killed).Round(time.Millisecond))
	}
	eventually(t, 30*time.Second, func() string { return "every device to reconnect after the last restart: " + connCounts(devices) },
		func() bool { return connected(kills + 1) })
	stopSending()
	sending.Wait()
	stopReading()
	reading.Wait()
	if sender.err != nil {
		t.Fatalf("a1: %v", sender.err)
	}

	// Quiet: nothing is sent or read. The cursors are those of every
	// answered READ at least, and the devices agree.
	last := uint64(len(sender.sent))
	high, asked := answered.Load(), max(b1.asked.Load(), b2.asked.Load())
	var readSeq [2]uint64
	for i, d := range bobs {
		cs := d.inbox(t)
		readSeq[i] = cs.GetReadSeq()
		if cs.GetLastSeq() != last || cs.GetReadSeq() < high || cs.GetReadSeq() > asked || cs.GetUnread() != last-min(cs.GetReadSeq(), last) {
			t.Errorf("%s: inbox after the kills has last_seq %d, read_seq %d, unread %d; want last_seq %d, read_seq in [%d (answered), %d (asked)], unread last_seq - read_seq",
				d.name, cs.GetLastSeq(), cs.GetReadSeq(), cs.GetUnread(), last, high, asked)
		}
	}
	if readSeq[0] != readSeq[1] {
		t.Errorf("bob's devices disagree on the read cursor: %d and %d", readSeq[0], readSeq[1])
	}
	for _, d := range []*receiptDevice{a1, a2} {
		cs := d.inbox(t)
		if cs.GetLastSeq() != last || cs.GetPeerRead() < high || cs.GetPeerRead() > asked {
			t.Errorf("%s: inbox after the kills has last_seq %d, peer_read %d; want last_seq %d, peer_read in [%d, %d]",
				d.name, cs.GetLastSeq(), cs.GetPeerRead(), last, high, asked)
		}
	}
	t.Logf("after the kills: %d messages, read cursor %d (highest answered %d, highest asked %d)", last, readSeq[0], high, asked)

	// After the last restart: bob receives and reads more, and alice
	// learns it: a1 from events, a2, away meanwhile, from the receipts
	// of its reconnection.
	a2.c.Background()
	for range final {
		if err := sender.send(); err != nil {
			t.Fatalf("a1: %v", err)
		}
	}
	last = uint64(len(sender.sent))
	for _, d := range bobs {
		want := map[string]int{conv: int(last)}
		eventually(t, waitTime, func() string { return d.name + " to receive the last messages: " + d.msgs.progress(want) },
			func() bool { return d.msgs.caughtUp(want) })
	}
	for i, d := range bobs {
		if i == 1 {
			// b1's READ reaches b2 (before b2's own READ, after which
			// b2's client would drop it as nothing new).
			own := receiptKey{user: "bob", toUser: "alice"}
			eventually(t, waitTime, func() string {
				return fmt.Sprintf("%s to get a read_private %d event: has %+v", d.name, last, d.events.max(own))
			}, func() bool { return d.events.max(own).readPrivate == last })
		}
		res, err := d.c.Read(ctxT(t), client.ToUser("alice"), last)
		if err != nil {
			t.Fatalf("%s: read %d: %v", d.name, last, err)
		}
		if res.GetReadSeq() != last || res.GetUnread() != 0 {
			t.Errorf("%s: read %d answered %v", d.name, last, res)
		}
		d.learn(receiptKey{user: "bob", toUser: "alice"}, receiptMarks{readPrivate: res.GetReadSeq()})
	}
	if err := a2.c.Foreground(ctxT(t)); err != nil {
		t.Fatalf("a2: foreground: %v", err)
	}
	for _, d := range []*receiptDevice{a1, a2} {
		// The events first: Inbox would teach the client the cursors,
		// and it would then drop the events that bring them.
		eventually(t, waitTime, func() string {
			return fmt.Sprintf("%s to get receipt events delivered=read=%d: has %+v", d.name, last, d.events.max(receiptKey{user: "bob", toUser: "bob"}))
		}, func() bool {
			m := d.events.max(receiptKey{user: "bob", toUser: "bob"})
			return m.delivered == last && m.read == last
		})
		cs := d.inbox(t)
		if cs.GetPeerDelivered() != last || cs.GetPeerRead() != last || cs.GetLastSeq() != last {
			t.Errorf("%s: inbox has peer_delivered %d, peer_read %d, last_seq %d; want %d", d.name, cs.GetPeerDelivered(), cs.GetPeerRead(), cs.GetLastSeq(), last)
		}
	}
	for _, d := range bobs {
		cs := d.inbox(t)
		if cs.GetReadSeq() != last || cs.GetUnread() != 0 || cs.GetLastSeq() != last {
			t.Errorf("%s: inbox has read_seq %d, unread %d, last_seq %d; want %d, 0, %d", d.name, cs.GetReadSeq(), cs.GetUnread(), cs.GetLastSeq(), last, last)
		}
	}

	// The sender's other device gets alice's messages too.
	want := map[string]int{conv: int(last)}
	eventually(t, waitTime, func() string { return "a2 to receive the last messages: " + a2.msgs.progress(want) },
		func() bool { return a2.msgs.caughtUp(want) })

	for _, d := range devices {
		d.close()
	}
	var total audit
	for _, d := range []*receiptDevice{b1, b2, a2} {
		a := checkConv(t, d.name, conv, d.msgs.messages(conv), sender.sent)
		if !a.clean() || a.unacked != 0 {
			t.Errorf("%s: %s", d.name, a)
		}
		total.add(a)
	}
	for _, d := range devices {
		d.check(t)
	}
	var answeredReads, unanswered int64
	for _, d := range bobs {
		answeredReads += d.answeredReads.Load()
		unanswered += d.unanswered.Load()
		for _, r := range d.results {
			if r.GetReadSeq()+r.GetUnread() > last {
				t.Errorf("%s: READ answered read_seq %d, unread %d: more than the %d messages sent", d.name, r.GetReadSeq(), r.GetUnread(), last)
			}
		}
	}
	t.Logf("receipts kill figures: kills %d, messages %d (%d sends retried, %d answered duplicate), READs answered %d, unanswered %d; reconnections with a checked Connected().Inbox %s; receipt events %s",
		kills, last, sender.retried, sender.dups, answeredReads, unanswered, snapCounts(devices), eventCounts(devices))
	t.Logf("b1, b2 and a2: %s", total)
	if err := p.stop(); err != nil {
		t.Errorf("graceful stop after the run: %v", err)
	}
	checkQimdLog(t, p)
	t.Logf("TestReceiptsKill9 took %v", time.Since(begin).Round(time.Millisecond))
}

// TestReceiptsClientKilled kills bob's device b1 while alice's messages
// are pushed to it and its READs are in flight: its UDP socket is closed,
// so the server hears nothing more from it (no DISCONNECT, no
// CONNECTION_CLOSE) and goes on pushing into the void. b1 comes back
// (another Client, as after an app restart) with the same device id: its
// Connected().Inbox has the read cursor of the READs answered before the
// kill (or of one in flight), unread counts agree with bob's other device
// b2, it gets every message after what it acknowledged, once, in order,
// and its READ of the last message reaches b2 and alice.
func TestReceiptsClientKilled(t *testing.T) {
	const n = 200
	srv := testserver.Start(t, testserver.Options{})
	conv := store.DirectConv("alice", "bob")
	var answered atomic.Uint64
	alice := newReceiptDevice(t, srv.ClientConfig("alice", "phone"), "bob", &answered)
	b2 := newReceiptDevice(t, srv.ClientConfig("bob", "b2"), "alice", &answered)

	// b1 acknowledges only what the program took (Inbox -1), reads what
	// it was shown, and dies with its socket.
	var sock killableSockets
	cfg := srv.ClientConfig("bob", "b1")
	cfg.Inbox = -1
	cfg.ListenPacket = sock.listen
	old := newReceiptDevice(t, cfg, "alice", &answered)
	stopRead := make(chan struct{})
	stopReading := sync.OnceFunc(func() { close(stopRead) })
	var reading, sending sync.WaitGroup
	t.Cleanup(func() { // on a failure: after the sender's, before the clients' cleanups
		stopReading()
		reading.Wait()
		sending.Wait()
	})
	sender := newReceiptSender(t, alice.c, "bob")
	sendErr := make(chan error, 1)
	reading.Go(func() { old.readLoop(stopRead) })
	sending.Go(func() {
		for range n {
			if err := sender.send(); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	})
	eventually(t, waitTime, func() string {
		return fmt.Sprintf("b1 to be shown 60 messages (%s) and have 3 READs answered (%d)",
			old.msgs.progress(map[string]int{conv: n}), old.answeredReads.Load())
	}, func() bool { return old.last() >= 60 && old.answeredReads.Load() >= 3 })
	sock.kill()
	killedAt := old.last()
	old.msgs.wait() // the session ends: Messages closes
	stopReading()
	reading.Wait()
	old.close()
	if err := <-sendErr; err != nil {
		t.Fatalf("alice: %v", err)
	}
	shown := old.msgs.messages(conv)
	high, asked := old.maxAnswered.Load(), old.asked.Load()

	// b1 again: what the server kept of it.
	again := newReceiptDevice(t, srv.ClientConfig("bob", "b1"), "alice", &answered)
	var cs *qimpb.ConversationState
	for _, c := range again.c.Connected().GetInbox().GetConversations() {
		if c.GetToUser() == "alice" {
			cs = c
		}
	}
	lastShown := uint64(len(shown))
	switch {
	case cs == nil:
		t.Fatalf("b1's Connected().Inbox has no conversation with alice: %v", again.c.Connected().GetInbox())
	case cs.GetLastSeq() != n || cs.GetReadSeq() < high || cs.GetReadSeq() > asked || cs.GetUnread() != n-cs.GetReadSeq():
		t.Errorf("b1 back: last_seq %d, read_seq %d, unread %d; want last_seq %d, read_seq in [%d (answered), %d (asked)], unread %d - read_seq",
			cs.GetLastSeq(), cs.GetReadSeq(), cs.GetUnread(), n, high, asked, n)
	case cs.GetAcked() > lastShown:
		t.Errorf("b1 back: acked %d, but the dead device was shown only %d", cs.GetAcked(), lastShown)
	}
	if c2 := b2.inbox(t); c2.GetReadSeq() != cs.GetReadSeq() || c2.GetUnread() != cs.GetUnread() {
		t.Errorf("b2 has read_seq %d, unread %d; b1 back has %d, %d", c2.GetReadSeq(), c2.GetUnread(), cs.GetReadSeq(), cs.GetUnread())
	}

	for i, m := range shown {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("the dead b1 was shown seq %d as message %d", m.GetSeq(), i+1)
		}
	}
	eventually(t, waitTime, func() string { return "b1 back to receive the rest: " + again.msgs.progress(map[string]int{conv: n}) },
		func() bool { return again.last() >= n })
	rest := again.msgs.messages(conv)
	for i, m := range rest {
		if want := cs.GetAcked() + 1 + uint64(i); m.GetSeq() != want {
			t.Fatalf("b1 back: message %d has seq %d, want %d (from acked %d + 1, each once, in order)", i, m.GetSeq(), want, cs.GetAcked())
		}
		if s, ok := sender.sent[m.GetClientMsgId()]; !ok || s.seq != m.GetSeq() || s.id != m.GetId() {
			t.Fatalf("b1 back: seq %d (%q) is not what alice was acknowledged (%+v)", m.GetSeq(), m.GetClientMsgId(), s)
		}
	}

	res, err := again.c.Read(ctxT(t), client.ToUser("alice"), n)
	if err != nil {
		t.Fatal(err)
	}
	again.learn(receiptKey{user: "bob", toUser: "alice"}, receiptMarks{readPrivate: res.GetReadSeq()})
	if res.GetReadSeq() != n || res.GetUnread() != 0 {
		t.Errorf("b1 back: read %d answered %v", n, res)
	}
	eventually(t, waitTime, func() string {
		return fmt.Sprintf("b2 to get read_private %d (has %+v), alice delivered=read=%d (has %+v)", n,
			b2.events.max(receiptKey{user: "bob", toUser: "alice"}), n, alice.events.max(receiptKey{user: "bob", toUser: "bob"}))
	}, func() bool {
		a := alice.events.max(receiptKey{user: "bob", toUser: "bob"})
		return b2.events.max(receiptKey{user: "bob", toUser: "alice"}).readPrivate == n && a.delivered == n && a.read == n
	})
	if c2 := b2.inbox(t); c2.GetReadSeq() != n || c2.GetUnread() != 0 {
		t.Errorf("b2 has read_seq %d, unread %d; want %d, 0", c2.GetReadSeq(), c2.GetUnread(), n)
	}
	if ca := alice.inbox(t); ca.GetPeerRead() != n || ca.GetPeerDelivered() != n {
		t.Errorf("alice has peer_read %d, peer_delivered %d; want %d", ca.GetPeerRead(), ca.GetPeerDelivered(), n)
	}

	for _, d := range []*receiptDevice{alice, b2, again} {
		d.close()
	}
	if a := checkConv(t, "b2", conv, b2.msgs.messages(conv), sender.sent); !a.clean() || a.unacked != 0 {
		t.Errorf("b2: %s", a)
	}
	for _, d := range []*receiptDevice{alice, b2, old, again} {
		d.check(t)
	}
	t.Logf("b1 killed after being shown %d of %d (%d READs answered, up to %d; asked up to %d); back: read_seq %d, unread %d, acked %d, then got seqs %d to %d (%d shown again)",
		killedAt, n, old.answeredReads.Load(), high, asked, cs.GetReadSeq(), cs.GetUnread(), cs.GetAcked(),
		rest[0].GetSeq(), rest[len(rest)-1].GetSeq(), lastShown-cs.GetAcked())
}

// receiptDevice is a device of the receipt tests: a Client whose messages
// are collected, whose Receipt events are checked as they come, and whose
// reconnections' Connected().Inbox is checked against the READs answered
// before each began.
type receiptDevice struct {
	// Static after newReceiptDevice.
	name     string // user/device
	user     string
	peer     string // the other user of the conversation
	c        *client.Client
	msgs     *collector
	events   *eventWatch
	answered *atomic.Uint64 // shared: the highest read_seq answered to a device of bob

	conns         atomic.Int64  // connections accepted, the first included
	answeredReads atomic.Int64  // READs answered to readLoop
	unanswered    atomic.Int64  // READs of readLoop that failed without an answer
	asked         atomic.Uint64 // the highest seq readLoop asked to read
	maxAnswered   atomic.Uint64 // the highest read_seq answered to readLoop
	slowest       atomic.Int64  // the longest READ of readLoop, in ns
	cp            atomic.Pointer[client.Client]

	// Owned by readLoop; read after it returns.
	results []*qimpb.ReadResult

	mu       sync.Mutex
	floor    uint64                      // answered at the last Reconnecting; guarded by mu
	checked  int                         // reconnections whose Connected().Inbox was checked; guarded by mu
	snaps    []inboxSnap                 // reconnections' Connected().Inbox; guarded by mu
	learnt   map[receiptKey]receiptMarks // from Read and Inbox, which make no events; guarded by mu
	problems []string                    // guarded by mu
}

// inboxSnap is what a reconnection's Connected().Inbox said of the
// conversation.
type inboxSnap struct {
	key   receiptKey
	marks receiptMarks
}

// newReceiptDevice dials cfg with OnState set, and closes the client when
// the test ends.
func newReceiptDevice(t *testing.T, cfg client.Config, peer string, answered *atomic.Uint64) *receiptDevice {
	t.Helper()
	d := &receiptDevice{name: cfg.User + "/" + cfg.Device, user: cfg.User, peer: peer, answered: answered,
		learnt: make(map[receiptKey]receiptMarks)}
	cfg.EventQueue = 1 << 14
	cfg.OnState = d.onState
	c, err := client.Dial(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("%s: dial: %v", d.name, err)
	}
	t.Cleanup(func() { c.Close() })
	d.c = c
	d.cp.Store(c)
	d.msgs = newCollector(c)
	d.events = watchEvents(c)
	return d
}

// onState is the device's Config.OnState: it counts connections and checks
// each reconnection's Connected().Inbox. It runs in the client's
// goroutine.
func (d *receiptDevice) onState(s client.State) {
	switch s {
	case client.Reconnecting:
		// READs answered before this attempt began are on disk before
		// the server reads the inbox for its CONNECT.
		d.mu.Lock()
		d.floor = d.answered.Load()
		d.mu.Unlock()
	case client.Connected:
		if d.conns.Add(1) == 1 {
			return
		}
		c := d.cp.Load()
		if c == nil {
			return
		}
		for _, cs := range c.Connected().GetInbox().GetConversations() {
			if cs.GetToUser() != d.peer {
				continue
			}
			cursor := cs.GetReadSeq() // bob's read cursor: his own, or alice's peer's
			if d.user != "bob" {
				cursor = cs.GetPeerRead()
			}
			d.mu.Lock()
			d.checked++
			d.snaps = append(d.snaps, inboxMarks(d.user, cs)...)
			if cursor < d.floor {
				d.problems = append(d.problems, fmt.Sprintf("reconnection %d: Connected().Inbox has bob's read cursor at %d, below %d answered before it began",
					d.conns.Load()-1, cursor, d.floor))
			}
			if cs.GetUnread() != cs.GetLastSeq()-min(cs.GetReadSeq(), cs.GetLastSeq()) {
				d.problems = append(d.problems, fmt.Sprintf("reconnection %d: Connected().Inbox has unread %d, last_seq %d, read_seq %d",
					d.conns.Load()-1, cs.GetUnread(), cs.GetLastSeq(), cs.GetReadSeq()))
			}
			d.mu.Unlock()
		}
	}
}

// inboxMarks returns the receipts that the inbox entry cs of user me
// holds, as the client learns them: the other user's delivered and read
// cursors, and me's own read cursor.
func inboxMarks(me string, cs *qimpb.ConversationState) []inboxSnap {
	peer := cs.GetToUser()
	return []inboxSnap{
		{receiptKey{user: peer, toUser: peer}, receiptMarks{delivered: cs.GetPeerDelivered(), read: cs.GetPeerRead()}},
		{receiptKey{user: me, toUser: peer}, receiptMarks{readPrivate: cs.GetReadSeq()}},
	}
}

// readLoop reads, every 5 ms, the last message the device was shown, until
// stop is closed: bob's READs. It runs in its own goroutine.
func (d *receiptDevice) readLoop(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		seq := d.last()
		if seq <= d.asked.Load() {
			continue
		}
		d.asked.Store(seq)
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		began := time.Now()
		res, err := d.c.Read(rctx, client.ToUser(d.peer), seq)
		rcancel()
		if took := int64(time.Since(began)); took > d.slowest.Load() {
			d.slowest.Store(took)
		}
		var qe *client.Error
		switch {
		case err == nil:
			d.answeredReads.Add(1)
			d.results = append(d.results, res)
			if res.GetReadSeq() < seq {
				d.problem("READ %d answered read_seq %d: the cursor went back", seq, res.GetReadSeq())
			}
			raise(d.answered, res.GetReadSeq())
			raise(&d.maxAnswered, res.GetReadSeq())
			d.learn(receiptKey{user: "bob", toUser: d.peer}, receiptMarks{readPrivate: res.GetReadSeq()})
		case errors.As(err, &qe) && !retryable(qe.Code):
			d.problem("READ %d refused: %v", seq, err)
		default:
			d.unanswered.Add(1)
		}
	}
}

// last returns the seq of the last message the device was shown.
func (d *receiptDevice) last() uint64 {
	d.msgs.mu.Lock()
	defer d.msgs.mu.Unlock()
	ms := d.msgs.byCv[store.DirectConv(d.user, d.peer)]
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].GetSeq()
}

// inbox calls Inbox and returns the conversation with the peer.
func (d *receiptDevice) inbox(t *testing.T) *qimpb.ConversationState {
	t.Helper()
	convs, err := d.c.Inbox(ctxT(t))
	if err != nil {
		t.Fatalf("%s: inbox: %v", d.name, err)
	}
	for _, cs := range convs {
		if cs.GetToUser() == d.peer {
			for _, s := range inboxMarks(d.user, cs) {
				d.learn(s.key, s.marks)
			}
			return cs
		}
	}
	t.Fatalf("%s: inbox has no conversation with %s: %v", d.name, d.peer, convs)
	return nil
}

// learn records what the client learnt without an event (Read, Inbox).
func (d *receiptDevice) learn(key receiptKey, m receiptMarks) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.learnt[key] = d.learnt[key].merge(m)
}

func (d *receiptDevice) problem(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.problems = append(d.problems, fmt.Sprintf(format, args...))
}

// close closes the client and waits until its messages and events are
// read.
func (d *receiptDevice) close() {
	d.c.Close()
	d.msgs.wait()
	d.events.wait()
}

// check reports the device's problems: reconnections and READs (onState,
// readLoop), events that went backwards or were dropped, and receipts a
// reconnection's Connected().Inbox taught the client that never reached
// the program. Call it after close.
func (d *receiptDevice) check(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	problems := slices.Concat(d.problems, d.events.problems())
	if n := d.c.EventsDropped(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d events dropped", n))
	}
	for _, s := range d.snaps {
		seen := d.events.max(s.key).merge(d.learnt[s.key])
		if seen.merge(s.marks) != seen {
			problems = append(problems, fmt.Sprintf("a reconnection taught %+v of %+v, but the program saw only %+v (events and its own calls)",
				s.marks, s.key, seen))
		}
	}
	for i, p := range problems {
		if i == 5 {
			t.Errorf("%s: %d more problems", d.name, len(problems)-5)
			break
		}
		t.Errorf("%s: %s", d.name, p)
	}
}

// receiptKey names the receipts of one user in one conversation, as a
// device addresses it.
type receiptKey struct {
	user, toUser, toGroup string
}

// receiptMarks are the cursors of a receiptKey.
type receiptMarks struct {
	delivered, read, readPrivate uint64
}

func (m receiptMarks) merge(o receiptMarks) receiptMarks {
	return receiptMarks{max(m.delivered, o.delivered), max(m.read, o.read), max(m.readPrivate, o.readPrivate)}
}

// eventWatch reads a client's events until the channel closes and checks
// that the Receipts of each key never go backwards.
type eventWatch struct {
	done chan struct{} // closed when Events is closed

	mu       sync.Mutex
	highest  map[receiptKey]receiptMarks // guarded by mu
	receipts int                         // guarded by mu
	backward []string                    // guarded by mu
}

// watchEvents starts reading c's events in a goroutine that ends when
// c's Events closes (wait waits for it).
func watchEvents(c *client.Client) *eventWatch {
	w := &eventWatch{done: make(chan struct{}), highest: make(map[receiptKey]receiptMarks)}
	go func() {
		defer close(w.done)
		for ev := range c.Events() {
			r := ev.GetReceipt()
			if r == nil {
				continue
			}
			key := receiptKey{r.GetUser(), r.GetToUser(), r.GetToGroup()}
			got := receiptMarks{r.GetDelivered(), r.GetRead(), r.GetReadPrivate()}
			w.mu.Lock()
			w.receipts++
			old := w.highest[key]
			if got.merge(old) != got && len(w.backward) < 10 {
				w.backward = append(w.backward, fmt.Sprintf("receipt %d of %+v went back: %+v after %+v", w.receipts, key, got, old))
			}
			w.highest[key] = old.merge(got)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *eventWatch) wait() { <-w.done }

// max returns the highest cursors the events of key brought.
func (w *eventWatch) max(key receiptKey) receiptMarks {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.highest[key]
}

func (w *eventWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.receipts
}

func (w *eventWatch) problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.backward...)
}

// receiptSender sends numbered messages from one device, one at a time,
// each retried with its ClientMsgID until it is acknowledged.
type receiptSender struct {
	// Static after newReceiptSender.
	c     *client.Client
	to    string
	abort chan struct{} // closed when the test ends: stop retrying

	acks atomic.Int64 // messages acknowledged; read by the test goroutine

	// Owned by the goroutine that sends; read after it is done.
	sent    map[string]sentMsg // by client_msg_id
	next    int
	retried int
	dups    int
	err     error
}

// newReceiptSender returns a sender from c to the user to. Its retries
// stop when the test ends (its cleanup).
func newReceiptSender(t *testing.T, c *client.Client, to string) *receiptSender {
	s := &receiptSender{c: c, to: to, abort: make(chan struct{}), sent: make(map[string]sentMsg)}
	t.Cleanup(func() { close(s.abort) })
	return s
}

// run sends, pausing between messages, until stop is closed, finishing
// the message it is on. It runs in its own goroutine.
func (s *receiptSender) run(stop <-chan struct{}, pause time.Duration) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if s.err = s.send(); s.err != nil {
			return
		}
		time.Sleep(pause)
	}
}

// send sends the next message until it is acknowledged, for up to
// maxRetryTime.
func (s *receiptSender) send() error {
	cid := fmt.Sprintf("m%05d", s.next)
	s.next++
	conv := store.DirectConv(s.c.User(), s.to)
	deadline := time.Now().Add(maxRetryTime)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ack, err := s.c.Send(ctx, client.ToUser(s.to), client.Outgoing{Text: cid, ClientMsgID: cid})
		cancel()
		var qe *client.Error
		switch {
		case err == nil:
			s.sent[cid] = sentMsg{conv: conv, id: ack.GetId(), seq: ack.GetSeq(), dup: ack.GetDuplicate()}
			if ack.GetDuplicate() {
				s.dups++
			}
			s.acks.Add(1)
			return nil
		case errors.As(err, &qe) && !retryable(qe.Code):
			return fmt.Errorf("%s refused: %w", cid, err)
		case time.Now().After(deadline):
			return fmt.Errorf("%s not acknowledged in %v: %w", cid, maxRetryTime, err)
		}
		select {
		case <-s.abort:
			return fmt.Errorf("%s: the test ended: %w", cid, err)
		default:
		}
		s.retried++
	}
}

// killableSockets opens a device's UDP sockets (Config.ListenPacket) and
// closes them all at once, as when the app is killed: nothing more leaves
// the device, not even a CONNECTION_CLOSE. Its methods are safe for
// concurrent use.
type killableSockets struct {
	mu    sync.Mutex
	socks []net.PacketConn // guarded by mu
}

func (k *killableSockets) listen(network, addr string) (net.PacketConn, error) {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.socks = append(k.socks, pc)
	return pc, nil
}

// kill closes every socket opened so far.
func (k *killableSockets) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, pc := range k.socks {
		pc.Close()
	}
}

// raise sets a to v if v is larger.
func raise(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// connCounts describes how many connections each device had.
func connCounts(ds []*receiptDevice) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s %d ", d.name, d.conns.Load())
	}
	return strings.TrimSpace(b.String())
}

// snapCounts describes how many reconnections' inboxes each device checked.
func snapCounts(ds []*receiptDevice) string {
	var b strings.Builder
	for _, d := range ds {
		d.mu.Lock()
		fmt.Fprintf(&b, "%s %d ", d.name, d.checked)
		d.mu.Unlock()
	}
	return strings.TrimSpace(b.String())
}

// eventCounts describes how many receipt events each device got.
func eventCounts(ds []*receiptDevice) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "%s %d ", d.name, d.events.count())
	}
	return strings.TrimSpace(b.String())
}
