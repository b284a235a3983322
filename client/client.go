// Package client is the Go client of the qim protocol (docs/PROTOCOL.md): it
// dials a server over QUIC, authenticates on the control stream, sends
// requests on one stream per conversation and delivers pushed messages on a
// channel.
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// ALPN is the TLS application protocol of qim version 1.
const ALPN = "qim/1"

// closeGrace bounds how long Close waits for the server to close the
// connection after DISCONNECT, and how long the client waits for the server
// to close it after receiving DISCONNECT, before closing it itself.
const closeGrace = time.Second

// Config configures Dial. Only Addr, TLSConfig and the credentials are
// required; every other zero value means the default stated on the field.
type Config struct {
	Addr string // server host:port
	// TLSConfig is required. It is cloned; NextProtos defaults to ["qim/1"].
	TLSConfig *tls.Config
	// QUICConfig nil means KeepAlivePeriod 20s, MaxIdleTimeout 60s,
	// MaxIncomingStreams 1000 (the server opens one stream per conversation
	// it pushes, and keeps it) and no unidirectional streams.
	QUICConfig *quic.Config

	Org, Appkey, User, Token string
	Device                   string // "" means "default"

	// SendOnly opens a session that only sends requests: the server pushes
	// nothing to it (Connect.send_only).
	SendOnly bool
	// MaxFrame is the largest frame payload accepted from the server; a
	// larger frame ends its stream. 0 means qimpb.DefaultMaxFrame.
	MaxFrame int
	// Inbox is the capacity of the Messages channel. 0 means 256; a
	// negative value makes it unbuffered, so that a message is acknowledged
	// only once the program has received it.
	Inbox int
	// Logger nil means discard.
	Logger *slog.Logger
}

// Client is one authenticated session: one QUIC connection. Its methods are
// safe for concurrent use.
type Client struct {
	// Static after Dial.
	log       *slog.Logger
	conn      *quic.Conn
	ctl       *quic.Stream // control stream; written by Dial, then by Close only
	connected *qimpb.Connected
	me        string // the authenticated user
	device    string // the session's device
	maxFrame  int    // largest frame read from the server
	sendLimit int    // largest frame the server accepts (Connected.max_frame)
	msgs      chan *qimpb.Message
	done      chan struct{} // closed by run when every goroutine has returned
	closing   chan struct{} // closed by Close: deliver no more messages
	closeOnce sync.Once

	// wg counts the goroutines of the session (control reader, stream
	// acceptor, stream readers and writers). Add is called only under mu
	// while !stopped, so run's Wait never races with it.
	wg sync.WaitGroup

	// Guarded by mu.
	mu        sync.Mutex
	stopped   bool                   // set by run: no new goroutines
	reasonSet bool                   // the end reason is known
	reason    error                  // why the session ended; nil after Close
	streams   map[Peer]*stream       // by conversation; Peer{} is the general stream
	opening   map[Peer]chan struct{} // closed when the stream being opened for a key is registered
	live      map[*stream]bool       // every stream not yet ended
	highest   map[Peer]uint64        // highest seq delivered, by conversation
	// delivering counts readers between deciding to deliver a message and
	// queueing its acknowledgement. After Close sets isClosing it only
	// decreases, and quiet is closed when it reaches zero.
	delivering int
	isClosing  bool
	quiet      chan struct{}
}

// Dial connects to the server at cfg.Addr, opens the control stream, sends
// CONNECT and waits for the server's answer. ctx bounds only the connecting;
// the session lasts until Close or until the connection ends. A refusal by
// the server is returned as an *Error (for example UNAUTHENTICATED).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.TLSConfig == nil {
		return nil, errors.New("qim: Config.TLSConfig is required")
	}
	tlsConf := cfg.TLSConfig.Clone()
	if len(tlsConf.NextProtos) == 0 {
		tlsConf.NextProtos = []string{ALPN}
	}
	quicConf := &quic.Config{
		KeepAlivePeriod:       20 * time.Second,
		MaxIdleTimeout:        60 * time.Second,
		MaxIncomingStreams:    1000,
		MaxIncomingUniStreams: -1,
	}
	if cfg.QUICConfig != nil {
		quicConf = cfg.QUICConfig.Clone()
	}
	maxFrame := cfg.MaxFrame
	if maxFrame <= 0 {
		maxFrame = qimpb.DefaultMaxFrame
	}
	inbox := cfg.Inbox
	switch {
	case inbox == 0:
		inbox = 256
	case inbox < 0:
		inbox = 0
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	conn, err := quic.DialAddr(ctx, cfg.Addr, tlsConf, quicConf)
	if err != nil {
		return nil, fmt.Errorf("qim: dial %s: %w", cfg.Addr, err)
	}
	c := &Client{
		log:      logger.With("user", cfg.User, "device", cfg.Device),
		conn:     conn,
		maxFrame: maxFrame,
		msgs:     make(chan *qimpb.Message, inbox),
		done:     make(chan struct{}),
		closing:  make(chan struct{}),
		streams:  make(map[Peer]*stream),
		opening:  make(map[Peer]chan struct{}),
		live:     make(map[*stream]bool),
		highest:  make(map[Peer]uint64),
	}
	fr, err := c.connect(ctx, &qimpb.Connect{
		Org:      cfg.Org,
		Appkey:   cfg.Appkey,
		User:     cfg.User,
		Token:    cfg.Token,
		Device:   cfg.Device,
		SendOnly: cfg.SendOnly,
	})
	if err != nil {
		conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "connect failed")
		return nil, err
	}
	c.me = c.connected.GetUser()
	if c.me == "" {
		c.me = cfg.User
	}
	c.device = c.connected.GetDevice()
	if c.device == "" {
		c.device = cmp.Or(cfg.Device, "default")
	}
	c.log = logger.With("user", c.me, "device", c.device)
	c.sendLimit = int(c.connected.GetMaxFrame())
	if c.sendLimit <= 0 {
		c.sendLimit = qimpb.DefaultMaxFrame
	}
	c.log.Debug("connected", "server", cfg.Addr, "max_frame", c.sendLimit)

	c.wg.Add(2)
	go c.readControl(fr)
	go c.acceptStreams()
	go c.run()
	return c, nil
}

// connect opens the control stream, sends CONNECT and reads the answer. It
// returns the control stream's frame reader, which may hold buffered bytes.
func (c *Client) connect(ctx context.Context, msg *qimpb.Connect) (*frameReader, error) {
	// Cancelling ctx closes the connection, which unblocks the read below.
	stop := context.AfterFunc(ctx, func() {
		c.conn.CloseWithError(quic.ApplicationErrorCode(qimpb.Code_CLOSED), "dial cancelled")
	})
	fr, err := c.handshake(ctx, msg)
	if !stop() {
		return nil, fmt.Errorf("qim: connect: %w", ctx.Err())
	}
	return fr, err
}

func (c *Client) handshake(ctx context.Context, msg *qimpb.Connect) (*frameReader, error) {
	ctl, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, c.connectError("open control stream", err)
	}
	c.ctl = ctl
	frame, err := qimpb.EncodeFrame(qimpb.CommandType_CONNECT, msg)
	if err != nil {
		return nil, fmt.Errorf("qim: %w", err)
	}
	if _, err := ctl.Write(frame); err != nil {
		return nil, c.connectError("send CONNECT", err)
	}
	fr := newFrameReader(ctl, c.maxFrame)
	var cmd qimpb.Command
	if err := fr.next(&cmd); err != nil {
		return nil, c.connectError("read CONNECT answer", err)
	}
	if cmd.GetVersion() != qimpb.Version {
		return nil, fmt.Errorf("qim: CONNECT answer has version %d", cmd.GetVersion())
	}
	switch cmd.GetCommand() {
	case qimpb.CommandType_DISCONNECT:
		var d qimpb.Disconnect
		if err := proto.Unmarshal(cmd.GetPayload(), &d); err != nil {
			return nil, fmt.Errorf("qim: decode DISCONNECT: %w", err)
		}
		return nil, errorOf(d.GetCode(), d.GetReason())
	case qimpb.CommandType_RESPONSE:
		var resp qimpb.Response
		if err := proto.Unmarshal(cmd.GetPayload(), &resp); err != nil {
			return nil, fmt.Errorf("qim: decode CONNECT response: %w", err)
		}
		if resp.GetCode() != int32(qimpb.Code_OK) {
			return nil, errorOf(resp.GetCode(), resp.GetReason())
		}
		c.connected = new(qimpb.Connected)
		if err := proto.Unmarshal(resp.GetPayload(), c.connected); err != nil {
			return nil, fmt.Errorf("qim: decode Connected: %w", err)
		}
		return fr, nil
	default:
		return nil, fmt.Errorf("qim: unexpected %v in answer to CONNECT", cmd.GetCommand())
	}
}

// connectError describes a failure while connecting; a connection the
// server closed with a qim code becomes that *Error.
func (c *Client) connectError(op string, err error) error {
	if isConnError(err) {
		var qe *Error
		if reason := closeReason(err); errors.As(reason, &qe) {
			return qe
		}
	}
	return fmt.Errorf("qim: %s: %w", op, err)
}

// readControl reads the control stream until the connection ends. A
// DISCONNECT from the server ends the session with that code; anything else
// is a protocol violation. It runs in its own goroutine.
func (c *Client) readControl(fr *frameReader) {
	defer c.wg.Done()
	var (
		cmd qimpb.Command
		err error
	)
	for {
		if err = fr.next(&cmd); err != nil {
			break
		}
		if cmd.GetCommand() != qimpb.CommandType_DISCONNECT {
			c.abort(qimpb.Code_PROTOCOL_VIOLATION, fmt.Errorf("qim: unexpected %v on the control stream", cmd.GetCommand()))
			return
		}
		var d qimpb.Disconnect
		if err := proto.Unmarshal(cmd.GetPayload(), &d); err != nil {
			c.abort(qimpb.Code_BAD_REQUEST, fmt.Errorf("qim: decode DISCONNECT: %w", err))
			return
		}
		// The server closes the connection right after DISCONNECT; give
		// in-flight answers that chance, then close it ourselves.
		c.log.Debug("disconnected by server", "code", qimpb.Code(d.GetCode()), "reason", d.GetReason())
		c.finish(errorOf(d.GetCode(), d.GetReason()))
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-c.conn.Context().Done():
		case <-t.C:
			c.conn.CloseWithError(quic.ApplicationErrorCode(d.GetCode()), d.GetReason())
		}
		return
	}
	switch {
	case isConnError(err):
		c.finish(closeReason(err))
	case errors.Is(err, qimpb.ErrFrameTooLarge):
		c.abort(qimpb.Code_FRAME_TOO_LARGE, fmt.Errorf("qim: control stream: %w", err))
	default:
		c.abort(qimpb.Code_PROTOCOL_VIOLATION, fmt.Errorf("qim: control stream: %w", err))
	}
}

// acceptStreams accepts the streams the server opens to push messages, until
// the connection ends. It runs in its own goroutine.
func (c *Client) acceptStreams() {
	defer c.wg.Done()
	for {
		qs, err := c.conn.AcceptStream(c.conn.Context())
		if err != nil {
			return
		}
		c.mu.Lock()
		if !c.stopped {
			c.startStream(qs, Peer{}, false)
		}
		c.mu.Unlock()
	}
}

// Messages returns the channel of messages the server pushes, in seq order
// per conversation, without duplicates. It is closed when the session ends,
// after the last delivery. A stored message is acknowledged to the server as
// soon as it is in the channel (see Config.Inbox).
//
// Delivery blocks while the channel is full, which holds back the stream of
// that conversation only: the server slows down through QUIC flow control,
// and the answers to requests sent on that stream wait too. A program that
// makes requests from the goroutine receiving from Messages should size
// Config.Inbox accordingly or make them from another goroutine.
func (c *Client) Messages() <-chan *qimpb.Message { return c.msgs }

// Connected returns the server's answer to CONNECT. It must not be modified.
func (c *Client) Connected() *qimpb.Connected { return c.connected }

// User returns the authenticated user.
func (c *Client) User() string { return c.me }

// Device returns the device of the session, as the server named it.
func (c *Client) Device() string { return c.device }
