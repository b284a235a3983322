package clustertest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/cluster"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// storeSilently stores a message from alice to bob straight in the
// cluster's store: no node routes it, as if NATS had lost its event and no
// later message revealed the gap.
func storeSilently(t *testing.T, c *testserver.Cluster, text string) {
	t.Helper()
	body, err := proto.Marshal(&qimpb.MessageTxt{Txt: text})
	if err != nil {
		t.Fatal(err)
	}
	m := &qimpb.Message{FromUser: "alice", FromDevice: "phone", ToUser: "bob", Type: qimpb.MessageType_TXT, Payload: body, ClientMsgId: text}
	if _, err := c.Store.Append(ctxT(t), []store.Append{{App: "demo/demo", Conv: store.DirectConv("alice", "bob"), Members: []string{"alice", "bob"}, Msg: m}}); err != nil {
		t.Fatal(err)
	}
}

// TestClusterCatchUpPeriodic checks the bound on losses nobody noticed: a
// message whose event was lost reaches bob's online device with the next
// periodic catch-up pass (CatchUpEvery).
func TestClusterCatchUpPeriodic(t *testing.T) {
	c := startCluster(t, 2, testserver.Options{CatchUpEvery: time.Second})
	bob := dial(t, c, 1, "bob", "phone")
	time.Sleep(1500 * time.Millisecond) // the session's first catch-up pass
	storeSilently(t, c, "lost")
	got := collect(t, bob, 1, 5*time.Second)
	checkConv(t, "bob", got, dense(1))
}

// TestClusterCatchUpOnReconnect checks the noticed loss: with no periodic
// pass, a message whose event was lost reaches bob's online device when
// his node reconnects to NATS (its NATS server stopped) and is told it may
// have missed events.
func TestClusterCatchUpOnReconnect(t *testing.T) {
	nats, err := cluster.StartLocalCluster(2, nil, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	urls := make([]string, len(nats))
	for i, s := range nats {
		urls[i] = s.ClientURL()
		t.Cleanup(s.Shutdown)
	}
	c := startCluster(t, 2, testserver.Options{NATSNodes: urls, CatchUpEvery: time.Hour})
	bob := dial(t, c, 1, "bob", "phone")
	time.Sleep(1500 * time.Millisecond) // the session's first catch-up pass
	storeSilently(t, c, "lost")
	quiet(t, bob, 500*time.Millisecond) // nothing tells his node yet
	nats[1].Shutdown()
	got := collect(t, bob, 1, 10*time.Second)
	checkConv(t, "bob", got, dense(1))
	if st := c.Nodes[1].Daemon().Router().Stats(); st.Reconnects == 0 || st.MissedCalls == 0 {
		t.Errorf("bob's node: %+v, want a reconnection and a missed call", st)
	}
}
