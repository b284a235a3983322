package cluster

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
)

// encodeEvent returns the RouteEvent of ev, an event of app sent by node,
// addressed to users (nil on a user's subject and the broadcast subject).
// It drops ev.Frame, a process-local optimisation.
func encodeEvent(app, node string, ev core.Event, users []string) ([]byte, error) {
	env := &qimpb.RouteEvent{
		Users:         users,
		App:           app,
		Node:          node,
		Msg:           ev.Msg,
		Conv:          ev.Conv,
		Revoke:        ev.Revoke,
		ReplaceDevice: ev.ReplaceDevice,
		ReplaceEpoch:  ev.ReplaceEpoch,
		Group:         ev.Group,
		EndSessions:   ev.EndSessions,
		Note:          ev.Note,
		NoteDevice:    ev.NoteDevice,
	}
	if !ev.Read.IsZero() {
		env.ReadUnixNano = ev.Read.UnixNano()
	}
	b, err := proto.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode event: %w", err)
	}
	return b, nil
}

// decodeEvent returns the event, its app and its sender's node, of the
// RouteEvent encoded in b.
func decodeEvent(b []byte) (app, node string, ev core.Event, err error) {
	app, node, ev, _, err = decodeEventUsers(b)
	return app, node, ev, err
}

// decodeEventUsers is decodeEvent, with the users the event is addressed
// to (on the fan-out subject).
func decodeEventUsers(b []byte) (app, node string, ev core.Event, users []string, err error) {
	var env qimpb.RouteEvent
	if err := proto.Unmarshal(b, &env); err != nil {
		return "", "", core.Event{}, nil, fmt.Errorf("cluster: decode event: %w", err)
	}
	ev = core.Event{
		Msg:           env.Msg,
		Conv:          env.Conv,
		Revoke:        env.Revoke,
		ReplaceDevice: env.ReplaceDevice,
		ReplaceEpoch:  env.ReplaceEpoch,
		Group:         env.Group,
		EndSessions:   env.EndSessions,
		Note:          env.Note,
		NoteDevice:    env.NoteDevice,
	}
	if env.ReadUnixNano != 0 {
		ev.Read = time.Unix(0, env.ReadUnixNano)
	}
	return env.App, env.Node, ev, env.Users, nil
}

// encodeMissed returns the RouteMissed of node, which dropped dropped
// events since its last report (0: it reconnected).
func encodeMissed(node string, dropped uint64) ([]byte, error) {
	b, err := proto.Marshal(&qimpb.RouteMissed{Node: node, Dropped: dropped})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode missed report: %w", err)
	}
	return b, nil
}

// decodeMissed returns the reporting node and its dropped count of the
// RouteMissed encoded in b.
func decodeMissed(b []byte) (node string, dropped uint64, err error) {
	var m qimpb.RouteMissed
	if err := proto.Unmarshal(b, &m); err != nil {
		return "", 0, fmt.Errorf("cluster: decode missed report: %w", err)
	}
	return m.Node, m.Dropped, nil
}

// encodeNode returns the RouteNode announcing node.
func encodeNode(node string, hello, leaving bool) ([]byte, error) {
	b, err := proto.Marshal(&qimpb.RouteNode{Node: node, Hello: hello, Leaving: leaving})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode heartbeat: %w", err)
	}
	return b, nil
}

// decodeNode returns the RouteNode encoded in b.
func decodeNode(b []byte) (*qimpb.RouteNode, error) {
	var m qimpb.RouteNode
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("cluster: decode heartbeat: %w", err)
	}
	return &m, nil
}

// encodeSync returns the RouteSync of node for barrier id.
func encodeSync(node string, id uint64) ([]byte, error) {
	b, err := proto.Marshal(&qimpb.RouteSync{Node: node, Id: id})
	if err != nil {
		return nil, fmt.Errorf("cluster: encode barrier: %w", err)
	}
	return b, nil
}

// decodeSync returns the node and barrier id of the RouteSync encoded in b.
func decodeSync(b []byte) (node string, id uint64, err error) {
	var m qimpb.RouteSync
	if err := proto.Unmarshal(b, &m); err != nil {
		return "", 0, fmt.Errorf("cluster: decode barrier: %w", err)
	}
	return m.Node, m.Id, nil
}
