package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/store"
)

// crashQUICConfig is the client QUIC configuration of the crash test: a
// short idle timeout, so that a device notices a killed server quickly.
func crashQUICConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:       500 * time.Millisecond,
		MaxIdleTimeout:        2 * time.Second,
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
	}
}

// TestCrashKill9 runs qimd as a subprocess and kills it with SIGKILL at
// random moments while 8 devices send 1:1 messages to a receiver and into a
// group. A device whose send fails reconnects and retries the same
// ClientMsgID until it is acknowledged. Afterwards fresh devices read
// everything: every acknowledged message is stored once, with the id and
// seq of its acknowledgement, seqs are dense, and each device receives each
// message once, in order. QIM_CRASH_SEED replays a run's kill schedule.
func TestCrashKill9(t *testing.T) { testCrashKill9(t) }

// TestCrashKill9Postgres is TestCrashKill9 with PostgreSQL as the store of
// record (qimd serve --store postgres://...): a killed qimd loses its
// connections to the database mid-transaction, and nothing acknowledged
// may be lost or doubled.
func TestCrashKill9Postgres(t *testing.T) { testCrashKill9(t, "--store", pgtest.Database(t)) }

func testCrashKill9(t *testing.T, args ...string) {
	const senders = 8
	kills := 5
	if soak() {
		kills = 40
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("QIM_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("QIM_CRASH_SEED: %v", err)
		}
	}
	t.Logf("QIM_CRASH_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	begin := time.Now()

	p := newQimd(t, qimdBin.Path(t), t.TempDir(), freeUDPAddr(t))
	p.args = args
	p.start()
	tlsConf := p.tlsConf
	rcvToken := p.token("rcv")

	// The receiver creates the group; every sender joins it.
	setup := dial(t, p.config("rcv", rcvToken, "setup"))
	g, err := setup.CreateGroup(ctxT(t), "crash")
	if err != nil {
		t.Fatal(err)
	}
	setup.Close()
	var background sync.WaitGroup // closes and drains of abandoned clients
	ss := make([]*crashSender, senders)
	for i := range ss {
		s := &crashSender{p: p, name: fmt.Sprintf("s%d", i), group: g.GetId(), background: &background, sent: make(map[string]sentMsg)}
		s.token = p.token(s.name)
		c := dial(t, p.config(s.name, s.token, "phone"))
		if _, err := c.JoinGroup(ctxT(t), s.group); err != nil {
			t.Fatal(err)
		}
		s.c = c
		background.Go(func() { drain(c) })
		ss[i] = s
	}

	// A device of the receiver stays online, reconnecting after each kill.
	live := &liveReceiver{p: p, token: rcvToken, highest: make(map[string]uint64)}
	liveStop := make(chan struct{})
	var liveDone sync.WaitGroup
	liveDone.Go(func() { live.run(liveStop) })

	stop := make(chan struct{})
	var sending sync.WaitGroup
	for _, s := range ss {
		sending.Go(func() { s.run(stop) })
	}
	t.Logf("sending started at %v", time.Since(begin).Round(time.Millisecond))
	var downtime, restart []time.Duration
	for k := range kills {
		// Each server gets some work (a few acks) before a kill at a
		// random moment: while devices reconnect and catch up, or later.
		mark := totalAcks(ss)
		eventually(t, 30*time.Second, func() string { return "acks from the restarted server:\n" + describeAll(ss) + clientStacks() }, func() bool {
			return totalAcks(ss) >= mark+senders
		})
		time.Sleep(time.Duration(rng.Int64N(int64(1500 * time.Millisecond))))
		before := totalAcks(ss)
		p.kill()
		killed := time.Now()
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		restarted := time.Now()
		p.start()
		restart = append(restart, time.Since(restarted))
		downtime = append(downtime, time.Since(killed))
		t.Logf("kill %d: %d acknowledged before it (%d by this server); answering again after %v",
			k+1, before, before-mark, time.Since(killed).Round(time.Millisecond))
	}
	// Let every sender get something through the last server, then stop.
	marks := make([]int64, len(ss))
	for i, s := range ss {
		marks[i] = s.acks.Load()
	}
	eventually(t, 30*time.Second, func() string { return "every sender to get acks from the last server:\n" + describeAll(ss) }, func() bool {
		for i, s := range ss {
			if s.acks.Load() < marks[i]+20 {
				return false
			}
		}
		return true
	})
	close(stop)
	sending.Wait()
	t.Logf("sending stopped at %v", time.Since(begin).Round(time.Millisecond))

	// What the senders were told.
	sent := make(map[string]sentMsg)
	var figs crashFigures
	want := make(map[string]int) // messages per conversation
	for _, s := range ss {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
		}
		for cid, m := range s.sent {
			sent[cid] = m
			want[m.conv]++
		}
		figs.ids += s.ids
		figs.attempts += s.attempts
		figs.failures += s.failures
		figs.dupAcks += s.dupAcks
		figs.reconnects += s.reconnects
		figs.maxStall = max(figs.maxStall, s.maxStall)
	}
	figs.acked = len(sent)
	groupConv := store.GroupConv(g.GetId())

	// The live device got everything, in order, with redeliveries only
	// across reconnects (PROTOCOL.md 5.3: a client drops them by seq).
	eventually(t, 30*time.Second, func() string { return "the live receiver to catch up: " + live.progress(want) }, func() bool {
		return live.caughtUp(want)
	})
	close(liveStop)
	liveDone.Wait()

	// Fresh devices: the receiver and two group members.
	var total audit
	rcvAudit := dialRawDevice(t, p.addr, tlsConf, "rcv", rcvToken, "audit")
	rcvAudit.waitFor(t, want, 30*time.Second)
	for conv := range want {
		total.add(checkConv(t, "rcv/audit", conv, rcvAudit.messages(conv), sent))
	}
	for _, s := range []*crashSender{ss[0], ss[senders-1]} {
		d := dialRawDevice(t, p.addr, tlsConf, s.name, s.token, "audit")
		direct := store.DirectConv(s.name, "rcv")
		d.waitFor(t, map[string]int{groupConv: want[groupConv], direct: want[direct]}, 30*time.Second)
		for _, conv := range []string{groupConv, direct} {
			checkConv(t, s.name+"/audit", conv, d.messages(conv), sent)
		}
	}
	// And the group's history, paged backwards.
	hist := readHistory(t, dial(t, p.config("rcv", rcvToken, "history")), g.GetId())
	checkConv(t, "GROUP_HISTORY", groupConv, hist, sent)

	figs.kills = kills
	figs.audit = total
	slices.Sort(downtime)
	slices.Sort(restart)
	t.Logf("crash figures: %s", figs)
	t.Logf("restart (process start, store recovery, first CONNECT answered): median %v, max %v; kill to answering again (with a random pause of up to 300ms): median %v, max %v",
		percentile(restart, 50).Round(time.Millisecond), restart[len(restart)-1].Round(time.Millisecond),
		percentile(downtime, 50).Round(time.Millisecond), downtime[len(downtime)-1].Round(time.Millisecond))
	t.Logf("live receiver: %d messages, %d redelivered after a reconnect, %d gaps, %d sessions",
		live.received, live.redelivered, live.gaps, live.sessions)
	if live.gaps > 0 {
		t.Errorf("live receiver saw %d gaps", live.gaps)
	}
	if !total.clean() || total.unacked != 0 {
		t.Errorf("audit: %s", total)
	}

	background.Wait()
	stopping := time.Now()
	if err := p.stop(); err != nil {
		t.Errorf("graceful stop after the run: %v", err)
	}
	t.Logf("graceful stop took %v", time.Since(stopping).Round(time.Millisecond))
	for _, bad := range []string{"DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(p.log.String(), bad) {
			t.Errorf("qimd wrote %q; its stderr:\n%s", bad, p.log.tail(8192))
		}
	}
	t.Logf("TestCrashKill9 took %v", time.Since(begin).Round(time.Millisecond))
}

// crashFigures are the totals of a crash run.
type crashFigures struct {
	kills      int
	ids        int // distinct ClientMsgIDs sent
	attempts   int // Send calls
	failures   int // Send calls that failed (then retried)
	acked      int
	dupAcks    int // acknowledgements with Duplicate set
	reconnects int
	maxStall   time.Duration // longest a sender waited between acks
	audit      audit
}

func (f crashFigures) String() string {
	return fmt.Sprintf("kills %d, sent %d (%d attempts, %d failed and retried, %d reconnects), acknowledged %d (%d as duplicates of a stored earlier attempt), "+
		"longest wait for an ack %v; audit of a fresh receiver device: %s",
		f.kills, f.ids, f.attempts, f.failures, f.reconnects, f.acked, f.dupAcks, f.maxStall.Round(time.Millisecond), f.audit)
}
