package reliability_test

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"

	"google.golang.org/protobuf/proto"

	qimpb "github.com/qim-im/qim/proto"
)

// garbage makes random and mutated frames.
type garbage struct {
	rng   *rand.Rand
	group string
}

func newGarbage(rng *rand.Rand) *garbage { return &garbage{rng: rng} }

// frame returns one frame that keeps the stream's framing intact: its
// contents may be anything.
func (g *garbage) frame() []byte {
	switch g.rng.IntN(6) {
	case 0: // a REQUEST whose payload is random
		return frameOf(qimpb.CommandType_REQUEST, g.bytes(g.rng.IntN(100)))
	case 1: // a valid Request whose payload has bits flipped
		req := g.request()
		req.Payload = g.flip(req.Payload)
		return encode(qimpb.CommandType_REQUEST, req)
	case 2: // a valid Command of another type or version
		payload, _ := proto.Marshal(g.request())
		b, _ := proto.Marshal(&qimpb.Command{
			Version: int32(g.rng.IntN(3)),
			Command: qimpb.CommandType(g.rng.IntN(6)),
			Payload: payload,
		})
		return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	case 3: // an acknowledgement of anything
		return encode(qimpb.CommandType_RESPONSE, &qimpb.Response{Code: int32(g.rng.IntN(20)), RequestId: g.rng.Uint64()})
	default: // a valid-looking request with odd values
		return encode(qimpb.CommandType_REQUEST, g.request())
	}
}

// breaking returns a frame that is likely to break the stream's framing,
// after which the server refuses the stream.
func (g *garbage) breaking() []byte {
	switch g.rng.IntN(6) {
	case 0: // a valid frame with bits flipped anywhere, the length too
		return g.flip(g.valid())
	case 1: // random bytes
		return g.bytes(g.rng.IntN(64))
	case 2: // a valid length, a random body
		body := g.bytes(g.rng.IntN(200))
		return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	case 3: // a valid frame cut short
		f := g.valid()
		return f[:g.rng.IntN(len(f))]
	case 4: // a declared length beyond the maximum
		return binary.AppendUvarint(nil, uint64(qimpb.DefaultMaxFrame)+1+g.rng.Uint64N(1<<40))
	default: // a valid frame with random bytes appended to its body
		f := g.valid()
		n, k := binary.Uvarint(f)
		body := append(f[k:k+int(n)], g.bytes(1+g.rng.IntN(20))...)
		return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	}
}

// valid returns a well-formed frame.
func (g *garbage) valid() []byte { return encode(qimpb.CommandType_REQUEST, g.request()) }

// request returns a Request with random but mostly plausible contents.
func (g *garbage) request() *qimpb.Request {
	req := &qimpb.Request{RequestId: g.rng.Uint64N(1000)}
	if g.rng.IntN(4) == 0 {
		req.Opts = []*qimpb.Option{{Offline: g.rng.IntN(2) == 0}}
	}
	switch g.rng.IntN(5) {
	case 0, 1:
		req.Type = qimpb.RequestType_MESSAGE
		m := &qimpb.Message{ClientMsgId: g.pick("", "c1", "c2", strings.Repeat("x", 65), g.str(8))}
		switch g.rng.IntN(4) {
		case 0:
			m.ToUser = g.pick("bob", "mallory", "a:b", "", strings.Repeat("u", 65), g.str(6))
		case 1:
			m.ToGroup = g.pick(g.group, "gnothere", "", "g:x", g.str(17))
		case 2:
			m.ToUser, m.ToGroup = "bob", g.group
		default:
			m.ToUser = "bob"
		}
		m.Type = qimpb.MessageType(g.rng.IntN(3))
		if m.Type == qimpb.MessageType_IMAGE {
			m.Payload, _ = proto.Marshal(&qimpb.MessageImg{Url: g.pick("https://example.com/a.png", "ftp://x/y", "http://", "%zz", "https://"+strings.Repeat("a", 2100), g.str(20))})
		} else {
			m.Payload, _ = proto.Marshal(&qimpb.MessageTxt{Txt: g.pick("hi", "", "\xff\xfe", strings.Repeat("t", 4097), g.str(30))})
		}
		if g.rng.IntN(8) == 0 {
			m.Payload = g.bytes(g.rng.IntN(40))
		}
		// Fields only the server sets.
		if g.rng.IntN(4) == 0 {
			m.FromUser, m.Seq, m.Id, m.Timestamp = "eve", g.rng.Uint64(), g.rng.Uint64(), g.rng.Int64()
		}
		req.Payload, _ = proto.Marshal(m)
	case 2:
		req.Type = qimpb.RequestType_CONTACT
		req.Payload, _ = proto.Marshal(&qimpb.ContactRequest{Op: qimpb.ContactOp(g.rng.IntN(5)), User: g.pick("bob", "", "a:b", g.str(10))})
	case 3:
		req.Type = qimpb.RequestType_GROUP
		req.Payload, _ = proto.Marshal(&qimpb.GroupRequest{
			// GROUP_CREATE, KICK and LEAVE would change the group under
			// the other requests; they are sent with other ids only.
			Op:        qimpb.GroupOp(g.rng.IntN(10)),
			GroupId:   g.pick("gnothere", "", g.str(17)),
			Name:      g.pick("", "n", strings.Repeat("n", 129)),
			User:      g.pick("bob", "", "a:b"),
			Limit:     g.rng.Uint32(),
			BeforeSeq: g.rng.Uint64(),
		})
		if g.rng.IntN(2) == 0 {
			// Read-only ops on the real group.
			req.Payload, _ = proto.Marshal(&qimpb.GroupRequest{
				Op:        g.pickOp(qimpb.GroupOp_GROUP_MEMBERS, qimpb.GroupOp_GROUP_HISTORY, qimpb.GroupOp_GROUP_LIST, qimpb.GroupOp_GROUP_JOIN),
				GroupId:   g.group,
				Limit:     g.rng.Uint32N(1000),
				BeforeSeq: g.rng.Uint64N(100),
			})
		}
	default:
		req.Type = qimpb.RequestType(g.rng.IntN(8))
		req.Payload = g.bytes(g.rng.IntN(30))
	}
	return req
}

func (g *garbage) flip(b []byte) []byte {
	b = append([]byte(nil), b...)
	if len(b) == 0 {
		return b
	}
	for range 1 + g.rng.IntN(4) {
		b[g.rng.IntN(len(b))] ^= 1 << g.rng.IntN(8)
	}
	return b
}

func (g *garbage) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.rng.Uint32())
	}
	return b
}

func (g *garbage) str(n int) string { return string(g.bytes(g.rng.IntN(n + 1))) }

func (g *garbage) pick(choices ...string) string { return choices[g.rng.IntN(len(choices))] }

func (g *garbage) pickOp(ops ...qimpb.GroupOp) qimpb.GroupOp { return ops[g.rng.IntN(len(ops))] }

func encode(ct qimpb.CommandType, m proto.Message) []byte {
	f, _ := qimpb.EncodeFrame(ct, m)
	return f
}

// frameOf returns a frame of a Command whose payload is payload as it is.
func frameOf(ct qimpb.CommandType, payload []byte) []byte {
	f, _ := qimpb.AppendFrame(nil, &qimpb.Command{Version: qimpb.Version, Command: ct, Payload: payload})
	return f
}
