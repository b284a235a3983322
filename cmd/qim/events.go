package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/qim-im/qim/client"
	qimpb "github.com/qim-im/qim/proto"
)

// expireEvery is how often listen and chat look for a "typing…" to end
// while one is shown.
const expireEvery = 250 * time.Millisecond

// stopGrace is how long "typing…" stays after the typist said it stopped:
// a device says so just before it sends, and the message that follows
// ends "typing…" without a line.
const stopGrace = time.Second

// defaultTypingTTL is how long "typing…" is shown when a Typing event has
// no ttl_ms (PROTOCOL.md 11.5: the server sends 6 s).
const defaultTypingTTL = 6 * time.Second

// printer prints the messages and events of a session, for listen and
// chat, as text lines or JSON objects. As text, it shows delivered and read
// ticks on the user's own messages, "typing…" until it ends (active false,
// a message from the typist or ttl_ms without a renewal: see expire) and
// presence changes. It is used by one goroutine, the one that owns the
// output; only its sent log is shared.
type printer struct {
	w      io.Writer
	me     string
	asJSON bool
	now    func() time.Time
	// sent holds the user's messages that the session sent (chat) or
	// printed (sent by the user's other devices), whose receipts are shown
	// as ticks on each.
	sent *sentLog

	receipts map[receiptKey]receiptMarks // printed so far
	typing   map[receiptKey]time.Time    // shown, until
}

// receiptKey names one user in one conversation.
type receiptKey struct {
	conv client.Peer
	user string
}

type receiptMarks struct{ delivered, read, readPrivate uint64 }

func newPrinter(w io.Writer, me string, asJSON bool, sent *sentLog) *printer {
	return &printer{w: w, me: me, asJSON: asJSON, now: time.Now, sent: sent,
		receipts: make(map[receiptKey]receiptMarks), typing: make(map[receiptKey]time.Time)}
}

// seed takes the receipts of an inbox (Connected.inbox) as already shown,
// so that the first events show only what moved since.
func (p *printer) seed(convs []*qimpb.ConversationState) {
	for _, cs := range convs {
		conv := client.Peer{User: cs.GetToUser(), Group: cs.GetToGroup()}
		if conv.User != "" && conv.User != p.me {
			p.receipts[receiptKey{conv, conv.User}] = receiptMarks{delivered: cs.GetPeerDelivered(), read: cs.GetPeerRead()}
		}
		rm := p.receipts[receiptKey{conv, p.me}]
		rm.readPrivate = cs.GetReadSeq()
		if conv.User == p.me {
			rm.delivered, rm.read = cs.GetPeerDelivered(), cs.GetPeerRead()
		}
		p.receipts[receiptKey{conv, p.me}] = rm
	}
}

// message prints m. A message ends its sender's "typing…" in its
// conversation, without a line: the message says it. A message of the
// user's gets ticks when its receipts come.
func (p *printer) message(m *qimpb.Message) error {
	conv := client.ConvOf(p.me, m)
	delete(p.typing, receiptKey{conv, m.GetFromUser()})
	if m.GetFromUser() == p.me {
		body := client.Text(m)
		if m.GetType() == qimpb.MessageType_IMAGE {
			body = client.ImageURL(m)
		}
		p.sent.add(conv, m.GetSeq(), body)
	}
	return printMessage(p.w, p.me, m, p.asJSON)
}

// event prints ev.
func (p *printer) event(ev *qimpb.Event) error {
	if p.asJSON {
		return printJSON(p.w, eventJSON(ev))
	}
	var lines []string
	switch {
	case ev.GetReceipt() != nil:
		lines = p.receipt(ev.GetReceipt())
	case ev.GetReceiptCount() != nil:
		rc := ev.GetReceiptCount()
		lines = []string{fmt.Sprintf("[#%s] #%d delivered to %d of %d, read by %d",
			rc.GetGroupId(), rc.GetSeq(), rc.GetDelivered(), rc.GetMembers(), rc.GetRead())}
	case ev.GetTyping() != nil:
		lines = p.typingEvent(ev.GetTyping())
	case ev.GetPresence() != nil:
		lines = []string{presenceLine(ev.GetPresence(), p.now())}
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(p.w, l); err != nil {
			return err
		}
	}
	return nil
}

// receipt returns the lines of a Receipt: a tick on each message of the
// user's in its sent log that it covers (✓ delivered, ✓✓ read), and a line
// when the user's own read cursor moved on another device. A receipt that
// covers no message of the log shows nothing: the other user's delivered
// cursor also moves over messages of theirs, or from before the session.
func (p *printer) receipt(r *qimpb.Receipt) []string {
	conv := client.Peer{User: r.GetToUser(), Group: r.GetToGroup()}
	key := receiptKey{conv, r.GetUser()}
	old := p.receipts[key]
	now := receiptMarks{max(old.delivered, r.GetDelivered()), max(old.read, r.GetRead()), max(old.readPrivate, r.GetReadPrivate())}
	p.receipts[key] = now
	var lines []string
	ticks := func(from, to uint64, tick string) {
		for _, s := range p.sent.between(conv, from, to) {
			lines = append(lines, fmt.Sprintf("[%s] %s: %s (#%d) %s", conv, p.me, s.text, s.seq, tick))
		}
	}
	if r.GetUser() != p.me || conv.User == p.me {
		ticks(old.delivered, now.delivered, "✓")
		ticks(old.read, now.read, "✓✓")
	}
	if now.readPrivate > old.readPrivate {
		lines = append(lines, fmt.Sprintf("[%s] read up to #%d on another device", conv, now.readPrivate))
	}
	return lines
}

// typingEvent returns the line of a Typing event, if it changes what is
// shown: a renewal only extends the time "typing…" is shown, and a stop
// shortens it to stopGrace (a message may follow).
func (p *printer) typingEvent(t *qimpb.Typing) []string {
	conv := client.Peer{User: t.GetToUser(), Group: t.GetToGroup()}
	key := receiptKey{conv, t.GetFromUser()}
	until, shown := p.typing[key]
	if !t.GetActive() {
		if end := p.now().Add(stopGrace); shown && end.Before(until) {
			p.typing[key] = end
		}
		return nil
	}
	ttl := time.Duration(t.GetTtlMs()) * time.Millisecond
	if ttl <= 0 {
		ttl = defaultTypingTTL
	}
	p.typing[key] = p.now().Add(ttl)
	if shown {
		return nil
	}
	return []string{fmt.Sprintf("[%s] %s is typing…", conv, t.GetFromUser())}
}

func stoppedTyping(key receiptKey) string {
	return fmt.Sprintf("[%s] %s stopped typing", key.conv, key.user)
}

// typingShown reports whether some "typing…" is shown, which expire must
// then be called for, every so often.
func (p *printer) typingShown() bool { return len(p.typing) > 0 }

// expire ends the "typing…" that were not renewed in time.
func (p *printer) expire() error {
	now := p.now()
	var ended []receiptKey
	for key, until := range p.typing {
		if !now.Before(until) {
			ended = append(ended, key)
		}
	}
	slices.SortFunc(ended, func(a, b receiptKey) int {
		return strings.Compare(a.conv.String()+" "+a.user, b.conv.String()+" "+b.user)
	})
	for _, key := range ended {
		delete(p.typing, key)
		if p.asJSON {
			continue
		}
		if _, err := fmt.Fprintln(p.w, stoppedTyping(key)); err != nil {
			return err
		}
	}
	return nil
}

// presenceLine is "bob is online", "bob is away" or "bob is offline, last
// seen 17:02".
func presenceLine(pr *qimpb.Presence, now time.Time) string {
	return pr.GetUser() + " is " + presenceText(pr, now, false)
}

// presenceText is "online", "away", "offline" or "offline, last seen
// WHEN": the time alone if it is today, else the date too (always with
// fullDate).
func presenceText(pr *qimpb.Presence, now time.Time, fullDate bool) string {
	switch pr.GetState() {
	case qimpb.PresenceState_ONLINE:
		return "online"
	case qimpb.PresenceState_AWAY:
		return "away"
	}
	if pr.GetLastSeen() <= 0 {
		return "offline"
	}
	seen := time.UnixMilli(pr.GetLastSeen()).In(now.Location())
	layout := "2006-01-02 15:04"
	if y, m, d := seen.Date(); !fullDate && y == now.Year() && m == now.Month() && d == now.Day() {
		layout = "15:04"
	}
	return "offline, last seen " + seen.Format(layout)
}

// stateName is the --json name of a presence state.
func stateName(s qimpb.PresenceState) string {
	return strings.ToLower(s.String())
}

// eventJSON returns the --json form of ev: an object whose "event" says
// its kind ("receipt", "receipt_count", "typing", "presence"). Message
// lines have no "event".
func eventJSON(ev *qimpb.Event) any {
	switch {
	case ev.GetReceipt() != nil:
		r := ev.GetReceipt()
		return struct {
			Event       string `json:"event"`
			Conv        string `json:"conv"`
			User        string `json:"user"`
			Delivered   uint64 `json:"delivered"`
			Read        uint64 `json:"read"`
			ReadPrivate uint64 `json:"read_private"`
		}{"receipt", client.Peer{User: r.GetToUser(), Group: r.GetToGroup()}.String(), r.GetUser(),
			r.GetDelivered(), r.GetRead(), r.GetReadPrivate()}
	case ev.GetReceiptCount() != nil:
		rc := ev.GetReceiptCount()
		return struct {
			Event     string `json:"event"`
			Conv      string `json:"conv"`
			Seq       uint64 `json:"seq"`
			Members   uint32 `json:"members"`
			Delivered uint32 `json:"delivered"`
			Read      uint32 `json:"read"`
		}{"receipt_count", client.ToGroup(rc.GetGroupId()).String(), rc.GetSeq(), rc.GetMembers(), rc.GetDelivered(), rc.GetRead()}
	case ev.GetTyping() != nil:
		t := ev.GetTyping()
		return struct {
			Event  string `json:"event"`
			Conv   string `json:"conv"`
			From   string `json:"from"`
			Active bool   `json:"active"`
			TTLMs  uint32 `json:"ttl_ms"`
		}{"typing", client.Peer{User: t.GetToUser(), Group: t.GetToGroup()}.String(), t.GetFromUser(), t.GetActive(), t.GetTtlMs()}
	default:
		pr := ev.GetPresence()
		return struct {
			Event    string `json:"event"`
			User     string `json:"user"`
			State    string `json:"state"`
			LastSeen int64  `json:"last_seen"`
			Since    int64  `json:"since"`
		}{"presence", pr.GetUser(), stateName(pr.GetState()), pr.GetLastSeen(), pr.GetSince()}
	}
}

// sentLog holds the latest messages of the user's that a session sent or
// printed, by conversation, so that their receipts show as ticks on them.
// It is safe for concurrent use.
type sentLog struct {
	mu    sync.Mutex
	convs map[client.Peer][]sentMsg // by seq; at most maxSent each
}

type sentMsg struct {
	seq  uint64
	text string
}

// maxSent bounds what a sentLog keeps per conversation.
const maxSent = 256

// add records the user's message seq of conv, text.
func (l *sentLog) add(conv client.Peer, seq uint64, text string) {
	if seq == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.convs == nil {
		l.convs = make(map[client.Peer][]sentMsg)
	}
	msgs := l.convs[conv]
	i, found := slices.BinarySearchFunc(msgs, seq, func(m sentMsg, seq uint64) int { return cmp.Compare(m.seq, seq) })
	if found {
		return
	}
	msgs = slices.Insert(msgs, i, sentMsg{seq, text})
	if len(msgs) > maxSent {
		msgs = slices.Delete(msgs, 0, len(msgs)-maxSent)
	}
	l.convs[conv] = msgs
}

// between returns the messages of conv with a seq in (from, to].
func (l *sentLog) between(conv client.Peer, from, to uint64) []sentMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sentMsg
	for _, m := range l.convs[conv] {
		if m.seq > from && m.seq <= to {
			out = append(out, m)
		}
	}
	return out
}
