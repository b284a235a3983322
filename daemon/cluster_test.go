package daemon_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/certs"
	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/daemon"
)

// clusterFiles are the files of a data directory that the nodes of a
// cluster share: the master key, the certificates (the CA's key is only
// needed to make new ones) and the application secrets.
var clusterFiles = []string{
	"keys/server.key",
	"certs/ca.pem",
	"certs/server.pem",
	"certs/server.key",
	"apps",
}

// copyClusterFiles copies clusterFiles from one data directory to
// another, as an operator does before starting a new node.
func copyClusterFiles(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range clusterFiles {
		err := filepath.WalkDir(filepath.Join(from, name), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(from, path)
			if err != nil {
				return err
			}
			if e.IsDir() {
				return os.MkdirAll(filepath.Join(to, rel), 0o700)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(to, rel)), 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(to, rel), b, 0o600)
		})
		if err != nil {
			t.Fatalf("copy %s: %v", name, err)
		}
	}
}

// startNode starts a cluster node on data and closes it when the test
// ends.
func startNode(t *testing.T, data string, serverID int, cfg daemon.Config) *daemon.Daemon {
	t.Helper()
	cfg.Listen, cfg.DataDir, cfg.NoSync, cfg.ServerID = "127.0.0.1:0", data, true, serverID
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// startCluster starts two nodes, with server ids 1 and 2, on two data
// directories that share clusterFiles; node2 is started with cfg2.
func startCluster(t *testing.T, cfg2 daemon.Config) (data1, data2 string, node1, node2 *daemon.Daemon) {
	t.Helper()
	data1, data2 = t.TempDir(), t.TempDir()
	node1 = startNode(t, data1, 1, daemon.Config{})
	copyClusterFiles(t, data1, data2)
	node2 = startNode(t, data2, 2, cfg2)
	return data1, data2, node1, node2
}

// clientConfig returns the configuration of alice's phone on addr, with
// a token minted from data's secret as `qimd token --data data` does. Its
// QUIC configuration is the client's default plus tracer.
func clientConfig(t *testing.T, addr, data string, tracer *cidTracer) client.Config {
	t.Helper()
	if created, err := daemon.EnsureDemoApp(data); err != nil || created {
		t.Fatalf("EnsureDemoApp(%s) = %v, %v: want the copied application", data, created, err)
	}
	secret, err := daemon.AppSecret(data, daemon.DemoOrg, daemon.DemoAppkey)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := certs.ClientTLS(filepath.Join(daemon.CertsDir(data), certs.CACertFile), false, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return client.Config{
		Addr: addr, TLSConfig: tlsConf,
		Org: daemon.DemoOrg, Appkey: daemon.DemoAppkey, User: "alice", Device: "phone",
		Token: auth.Mint(secret, daemon.DemoOrg, daemon.DemoAppkey, "alice", time.Now().Add(time.Hour)),
		QUICConfig: &quic.Config{
			KeepAlivePeriod:       25 * time.Second,
			MaxIdleTimeout:        60 * time.Second,
			MaxIncomingStreams:    1000,
			MaxIncomingUniStreams: -1,
			EnableDatagrams:       true,
			Tracer:                tracer.trace,
		},
	}
}

func dialNode(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *client.Client, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: text}); err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
}

// TestClusterResume connects a device to node 1 of a cluster, then to
// node 2: it resumes there in 0-RTT with node 1's session ticket, and
// node 2, which asks every new connection to validate its address (QUIC
// Retry), accepts node 1's NEW_TOKEN token instead. Every connection ID
// each node issues carries its server id, which a QUIC-LB balancer with
// the cluster's configuration reads.
func TestClusterResume(t *testing.T) {
	data1, data2, node1, node2 := startCluster(t, daemon.Config{HandshakeRate: -1})
	lb, err := daemon.QUICLB(data2)
	if err != nil {
		t.Fatal(err)
	}

	var tracer cidTracer
	sessions := tls.NewLRUClientSessionCache(4)
	tokens := quic.NewLRUTokenStore(4, 4)
	cfg := clientConfig(t, node1.Addr().String(), data1, &tracer)
	cfg.SessionCache, cfg.QUICConfig.TokenStore = sessions, tokens
	c := dialNode(t, cfg)
	send(t, c, "to node 1")
	eventually(t, 5*time.Second, "no NEW_TOKEN from node 1", func() bool { return tracer.conn(0).gotToken() })
	c.Close()

	cfg = clientConfig(t, node2.Addr().String(), data2, &tracer)
	cfg.SessionCache, cfg.QUICConfig.TokenStore = sessions, tokens
	c = dialNode(t, cfg)
	send(t, c, "to node 2")
	if !c.Used0RTT() {
		t.Error("the device did not resume on node 2 in 0-RTT")
	}
	if n := node2.Retries(); n != 0 {
		t.Errorf("node 2 asked for %d Retries: it did not accept node 1's token", n)
	}
	c.Close()

	for i, want := range []int{1, 2} {
		cids := tracer.conn(i).connIDs()
		if len(cids) < 2 {
			t.Fatalf("node %d issued %d connection IDs, want the handshake's and NEW_CONNECTION_ID's", want, len(cids))
		}
		for _, cid := range cids {
			sid, err := lb.ServerIDOf(cid)
			if len(cid) != 17 || err != nil || int(binary.BigEndian.Uint16(sid)) != want {
				t.Errorf("node %d issued connection ID %x: server id %x, %v", want, cid, sid, err)
			}
		}
		t.Logf("node %d: %d connection IDs, e.g. %x", want, len(cids), cids[0])
	}

	// Without a token, node 2 does ask for a Retry: the count above means
	// something.
	cfg = clientConfig(t, node2.Addr().String(), data2, &tracer)
	dialNode(t, cfg).Close()
	if node2.Retries() == 0 {
		t.Error("node 2 asked a device without a token for no Retry")
	}
}

// TestClusterStatelessReset routes a device's packets, through a
// switchable forwarder (a load balancer's mistake), to the node that does
// not have its connection: that node answers with stateless resets, which
// the device must ignore, because each node has its own reset key; routed
// back, the connection goes on. Then node 1 restarts: its reset key is
// the same, so its answer to the lost connection's next packets ends it at
// once instead of after the idle timeout.
func TestClusterStatelessReset(t *testing.T) {
	data1, _, node1, node2 := startCluster(t, daemon.Config{})
	fwd := newForwarder(t)
	fwd.route(node1.Addr())

	var tracer cidTracer
	cfg := clientConfig(t, fwd.addr(), data1, &tracer)
	c := dialNode(t, cfg)
	send(t, c, "through the balancer")

	fwd.route(node2.Addr())
	sent := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := c.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "misrouted"})
		sent <- err
	}()
	ended := func() bool {
		select {
		case <-c.Done():
			return true
		default:
			return false
		}
	}
	eventually(t, 5*time.Second, "node 2 answered nothing", func() bool { return fwd.from(node2.Addr()) >= 2 || ended() })
	fwd.route(node1.Addr())
	err := <-sent
	if ended() {
		t.Fatalf("node 2 ended the device's connection on node 1: %v", c.Err())
	}
	if err != nil {
		t.Fatalf("send after node 2's resets: %v", err)
	}
	send(t, c, "after node 2's resets") // the device has read them by now
	if ended() {
		t.Fatalf("node 2 ended the device's connection on node 1: %v", c.Err())
	}
	t.Logf("node 2 answered %d misrouted datagrams; the connection lives on", fwd.from(node2.Addr()))

	// Node 1 restarts, unheard by the device (its CONNECTION_CLOSE is
	// dropped), on a new port behind the forwarder.
	fwd.route(nil)
	node1.Close()
	restarted := startNode(t, data1, 1, daemon.Config{})
	fwd.route(restarted.Addr())
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		c.Send(ctx, client.ToUser("bob"), client.Outgoing{Text: "after the restart"})
	}()
	select {
	case <-c.Done():
		t.Logf("the restarted node 1 reset the connection: %v", c.Err())
	case <-time.After(5 * time.Second): // the idle timeout is 60 s
		t.Fatal("the restarted node 1 did not reset the connection it lost")
	}
	if err := c.Err(); !strings.Contains(fmt.Sprint(err), "stateless reset") {
		t.Errorf("the connection ended with %v, want a stateless reset", err)
	}
}

// cidTracer records, for each QUIC connection of a client in order, the
// connection IDs the server issued: the source connection ID of its long
// header packets and those of its NEW_CONNECTION_ID frames.
type cidTracer struct {
	mu    sync.Mutex
	conns []*connTrace
}

func (c *cidTracer) trace(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct := &connTrace{}
	c.conns = append(c.conns, ct)
	return ct
}

// conn returns the trace of the client's i-th connection (from 0).
func (c *cidTracer) conn(i int) *connTrace {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i >= len(c.conns) {
		return &connTrace{}
	}
	return c.conns[i]
}

type connTrace struct {
	mu    sync.Mutex
	cids  [][]byte
	token bool // a NEW_TOKEN frame arrived
}

func (ct *connTrace) AddProducer() qlogwriter.Recorder { return ct }
func (ct *connTrace) Close() error                     { return nil }

func (ct *connTrace) RecordEvent(ev qlogwriter.Event) {
	p, ok := ev.(qlog.PacketReceived)
	if !ok {
		return
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if p.Header.PacketType != qlog.PacketType1RTT && p.Header.SrcConnectionID.Len() > 0 {
		ct.add(p.Header.SrcConnectionID.Bytes())
	}
	for _, f := range p.Frames {
		switch f := f.Frame.(type) {
		case *qlog.NewConnectionIDFrame:
			ct.add(f.ConnectionID.Bytes())
		case *qlog.NewTokenFrame:
			ct.token = true
		}
	}
}

// add records cid once. ct.mu is held.
func (ct *connTrace) add(cid []byte) {
	for _, c := range ct.cids {
		if bytes.Equal(c, cid) {
			return
		}
	}
	ct.cids = append(ct.cids, bytes.Clone(cid))
}

func (ct *connTrace) connIDs() [][]byte {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.cids
}

func (ct *connTrace) gotToken() bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.token
}

// forwarder relays UDP datagrams between one client and the node it
// routes to, as a load balancer does, and counts the datagrams from each
// node. Routed nowhere, it drops everything.
type forwarder struct {
	front, back *net.UDPConn // the client's side, the nodes' side
	target      atomic.Pointer[net.UDPAddr]
	client      atomic.Pointer[net.UDPAddr]
	mu          sync.Mutex
	fromNode    map[string]int // datagrams per node address; guarded by mu
	wg          sync.WaitGroup
}

func newForwarder(t *testing.T) *forwarder {
	t.Helper()
	loopback := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	front, err := net.ListenUDP("udp", loopback)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp", loopback)
	if err != nil {
		front.Close()
		t.Fatal(err)
	}
	f := &forwarder{front: front, back: back, fromNode: make(map[string]int)}
	f.wg.Go(f.clientToNode)
	f.wg.Go(f.nodeToClient)
	t.Cleanup(func() {
		front.Close()
		back.Close()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) addr() string { return f.front.LocalAddr().String() }

// route sends the client's datagrams to node from now on; nil drops them,
// and the nodes' too.
func (f *forwarder) route(node net.Addr) {
	if node == nil {
		f.target.Store(nil)
		return
	}
	f.target.Store(node.(*net.UDPAddr))
}

// from returns how many datagrams came from node.
func (f *forwarder) from(node net.Addr) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fromNode[node.String()]
}

// clientToNode relays until the forwarder's sockets close.
func (f *forwarder) clientToNode() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := f.front.ReadFromUDP(buf)
		if err != nil {
			return
		}
		f.client.Store(from)
		if to := f.target.Load(); to != nil {
			f.back.WriteToUDP(buf[:n], to)
		}
	}
}

// nodeToClient relays until the forwarder's sockets close.
func (f *forwarder) nodeToClient() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := f.back.ReadFromUDP(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.fromNode[from.String()]++
		f.mu.Unlock()
		if to := f.client.Load(); to != nil && f.target.Load() != nil {
			f.front.WriteToUDP(buf[:n], to)
		}
	}
}
