package client

import (
	"slices"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// Soft events (PROTOCOL.md section 11): the server sends EVENT frames on
// the control stream after Connected and, with FEATURE_DATAGRAMS, typing
// events in QUIC datagrams. The client hands them to the program on the
// Events channel without ever waiting for it (the control stream also
// carries DISCONNECT), after dropping those that report nothing new:
// receipts never go backwards, and presence never goes back in time.

// Events returns the channel of the events the server sends: Receipt
// (how far a user received and read a conversation), ReceiptCount (a
// watched group message, see GroupReceipts), Typing and Presence. Each
// Event has exactly one field set. The channel is closed when the session
// ends, with Messages; it stays open across reconnections.
//
// Events are best-effort: the client never waits for the program, and an
// event that finds the channel full is dropped (EventsDropped counts them;
// Config.EventQueue sizes the channel). What they report can be read again:
// Inbox and Connected().Inbox for receipts and unread counts,
// ContactsPresence for presence.
//
// A Receipt event carries, in delivered, read and read_private, the highest
// value the client has seen for that user and conversation, from events,
// Connected().Inbox, Inbox and Read; it is delivered only when one of them
// moved. After each reconnection (not after Dial), the client also puts
// on the channel a Receipt for each conversation whose state in the new
// Connected().Inbox moved past what it had seen, so that a program that
// follows Events misses nothing of its outage. A Presence event older (by
// since) than the last one the client saw for that user, or the same again,
// is dropped. Typing events are passed on as they come: show one until
// active is false, a message from that user in that conversation, or
// ttl_ms without another.
func (c *Client) Events() <-chan *qimpb.Event { return c.events }

// EventsDropped returns how many events were dropped because the Events
// channel was full.
func (c *Client) EventsDropped() uint64 { return c.dropped.Load() }

// Granted reports whether the server granted feature f on the current
// connection (Connected().Features), that is whether it sends the events
// of f. A server older than receipts grants nothing.
func (c *Client) Granted(f qimpb.Feature) bool {
	return granted(c.Connected(), f)
}

func granted(connected *qimpb.Connected, f qimpb.Feature) bool {
	return slices.Contains(connected.GetFeatures(), f)
}

// features returns the features of cfg's CONNECT.
func features(cfg Config, quicConf *quic.Config) []qimpb.Feature {
	switch {
	case cfg.NoEvents:
		return nil
	case cfg.Features != nil:
		return slices.Clone(cfg.Features)
	case cfg.SendOnly:
		return nil
	}
	fs := []qimpb.Feature{qimpb.Feature_FEATURE_RECEIPTS, qimpb.Feature_FEATURE_TYPING,
		qimpb.Feature_FEATURE_PRESENCE, qimpb.Feature_FEATURE_INBOX}
	if quicConf.EnableDatagrams {
		fs = append(fs, qimpb.Feature_FEATURE_DATAGRAMS)
	}
	return fs
}

// event handles an EVENT frame, from the control stream or a datagram. A
// frame that does not decode is ignored, like an event of a kind the
// client does not know (PROTOCOL.md 11.1).
func (l *link) event(cmd *qimpb.Command) {
	if cmd.GetVersion() != qimpb.Version {
		l.log.Debug("ignoring EVENT", "version", cmd.GetVersion())
		return
	}
	ev := new(qimpb.Event)
	if err := proto.Unmarshal(cmd.GetPayload(), ev); err != nil {
		l.log.Debug("ignoring EVENT that does not decode", "err", err)
		return
	}
	l.c.deliverEvent(ev)
}

// readDatagrams reads the QUIC datagrams of the connection until it ends,
// when the server granted FEATURE_DATAGRAMS: each holds one encoded
// Command, an EVENT. Datagrams that are anything else are ignored. It runs
// in its own goroutine.
func (l *link) readDatagrams() {
	defer l.wg.Done()
	ctx := l.conn.Context()
	for {
		b, err := l.conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		var cmd qimpb.Command
		if proto.Unmarshal(b, &cmd) != nil || cmd.GetCommand() != qimpb.CommandType_EVENT {
			continue
		}
		l.event(&cmd)
	}
}

// deliverEvent puts ev on the Events channel unless it reports nothing new
// or the channel is full. It never blocks. Only the goroutines of a link
// and the goroutine that dials one call it, so it never runs after
// supervise closed the channel.
func (c *Client) deliverEvent(ev *qimpb.Event) {
	switch {
	case ev.GetReceipt() != nil:
		r := c.marks.receipt(ev.GetReceipt())
		if r == nil {
			return
		}
		ev = &qimpb.Event{Receipt: r}
	case ev.GetPresence() != nil:
		if !c.marks.presence(ev.GetPresence()) {
			return
		}
	case ev.GetTyping() != nil, ev.GetReceiptCount() != nil:
	default:
		return // a kind this client does not know
	}
	select {
	case c.events <- ev:
	default:
		c.dropped.Add(1)
	}
}

// learnConnected records the receipts of a new connection's inbox. After a
// reconnection (again), it delivers a Receipt event for each that moved. It
// is called by dialLink before the link's goroutines start.
func (c *Client) learnConnected(connected *qimpb.Connected, again bool) {
	moved := c.marks.inbox(c.me, connected.GetInbox().GetConversations())
	if !again {
		return
	}
	for _, r := range moved {
		select {
		case c.events <- &qimpb.Event{Receipt: r}:
		default:
			c.dropped.Add(1)
		}
	}
}
