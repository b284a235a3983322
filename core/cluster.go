package core

// hubListener is the hub as its router's listener (Router.Listen): in a
// cluster, it hears the other nodes' group changes and messages, to keep
// the group-member and recent-messages caches correct.
type hubListener struct{ h *Hub }

// ReceiveNode implements Listener. It never blocks.
func (l hubListener) ReceiveNode(app string, ev Event) {
	h := l.h
	switch {
	case ev.Group != "":
		h.forgetGroup(app, ev.Group)
	case ev.Note != nil:
		if r := ev.Note.Receipt; r != nil && r.ToGroup != "" {
			h.watches.touch(app, r.ToGroup)
		}
	case ev.Msg != nil && ev.Msg.Seq > 0 && ev.Msg.ToGroup != "" && h.shared:
		conv := ev.Conv
		if conv == "" {
			conv = ConvOf(ev.Msg)
		}
		h.recent.add(app, conv, ev.Msg, MsgCost(ev.Msg))
	}
}

// Missed implements Listener. The hub holds nothing that a lost event
// makes wrong for long: the recent cache never answers for the tail in a
// cluster, and member lists expire (Config.GroupCacheTTL). The device layer
// catches its sessions up.
func (hubListener) Missed() {}

// Shared reports whether other nodes share the hub's store, so that its
// sessions cannot count on the router to learn of every message: they
// catch up from the store now and then (package session).
func (h *Hub) Shared() bool { return h.shared }
