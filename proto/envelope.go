package qimpb

// The envelopes (Command, Request, Response) of the message path, decoded
// and encoded by hand: the payload is marshalled once, straight into the
// frame, and decoded without a copy. Both follow proto.Marshal and
// proto.Unmarshal byte for byte (FuzzDecoders, FuzzFrame and the encoder
// tests compare them).

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// DecodeRequest decodes an encoded Request into req, for a caller that is
// done with it before b changes: req.Payload is not copied but points into
// b, req's options reuse the Option values it already holds, and req keeps
// no unknown fields. It reports false for exactly the inputs that
// proto.Unmarshal refuses.
func DecodeRequest(b []byte, req *Request) bool {
	opts := req.Opts[:0]
	req.Type, req.Payload, req.Opts, req.RequestId, req.unknownFields = 0, nil, nil, 0, nil
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			req.Type, b = RequestType(int32(v)), b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			req.Payload, b = v, b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			var o *Option
			if i := len(opts); i < cap(opts) {
				o = opts[:i+1][i] // left by an earlier decode
			}
			if o == nil {
				o = new(Option)
			}
			if !decodeOption(v, o) {
				return false
			}
			opts = append(opts, o)
		case num == 4 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			req.RequestId, b = v, b[n:]
		default:
			if n = skipField(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	if len(opts) > 0 {
		req.Opts = opts
	}
	return true
}

// decodeCommand decodes an encoded Command into cmd, as ReadCommand
// describes.
func decodeCommand(b []byte, cmd *Command) bool {
	cmd.Version, cmd.Command, cmd.Payload, cmd.unknownFields = 0, 0, nil, nil
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			cmd.Version, b = int32(v), b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			cmd.Command, b = CommandType(int32(v)), b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			cmd.Payload, b = v, b[n:]
		default:
			if n = skipField(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

// decodeOption decodes an encoded Option into o, dropping unknown fields.
func decodeOption(b []byte, o *Option) bool {
	o.Offline, o.unknownFields = false, nil
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			o.Offline, b = protowire.DecodeBool(v), b[n:]
			continue
		}
		if n = skipField(num, typ, b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// The decoders above follow proto.Unmarshal: the last value of a field
// wins, a known field with an unexpected wire type is an unknown field,
// and unknown fields must be well formed. Their tests compare them with
// proto.Unmarshal.

// consumeTag is protowire.ConsumeTag that also refuses field numbers above
// protowire.MaxValidNumber, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}

// skipField returns the length of the value of an unknown field, or a
// negative number if it is malformed.
func skipField(num protowire.Number, typ protowire.Type, b []byte) int {
	return protowire.ConsumeFieldValue(num, typ, b)
}

// AppendRequestFrame appends the frame of a REQUEST Command to b: a Request
// of type t and id reqID, without options, whose payload is the encoding of
// payload. It marshals payload once, straight into b, and returns the
// extended slice; on error, it returns b as it was.
func AppendRequestFrame(b []byte, t RequestType, reqID uint64, payload proto.Message) ([]byte, error) {
	orig := b
	n := proto.Size(payload)
	size := requestSize(t, reqID, n)
	b = slices.Grow(b, frameSize(CommandType_REQUEST, size))
	b = appendCommandHead(b, CommandType_REQUEST, size)
	if t != RequestType_MESSAGE {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t))
	}
	b, err := appendBytesField(b, 2, payload, n)
	if err != nil {
		return orig, err
	}
	if reqID != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, reqID)
	}
	return b, nil
}

// AppendResponseFrame appends the frame of a RESPONSE Command to b: a
// Response with code, reason and reqID whose payload is the encoding of
// payload (nil: none). It marshals payload once, straight into b, and
// returns the extended slice; on error, it returns b as it was.
func AppendResponseFrame(b []byte, code Code, reason string, reqID uint64, payload proto.Message) ([]byte, error) {
	orig := b
	n := 0
	if payload != nil {
		n = proto.Size(payload)
	}
	size := responseSize(code, reason, reqID, n)
	b = slices.Grow(b, frameSize(CommandType_RESPONSE, size))
	b = appendCommandHead(b, CommandType_RESPONSE, size)
	if code != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(code)))
	}
	if reason != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, reason)
	}
	if reqID != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, reqID)
	}
	b, err := appendBytesField(b, 4, payload, n)
	if err != nil {
		return orig, err
	}
	return b, nil
}

// The encoders above write the envelopes (Command, Request, Response) by
// hand, byte for byte as proto.Marshal would (fields in number order, zero
// values left out), so that the payload is marshalled once, into its final
// place, instead of once per level of nesting. Their tests compare them
// with proto.Marshal.

// appendCommand appends the frame of a Command of type ct whose payload is
// msg, of encoded size n.
func appendCommand(b []byte, ct CommandType, msg proto.Message, n int) ([]byte, error) {
	b = appendCommandHead(b, ct, n)
	return marshalSized(b, msg, n)
}

// commandSize is the encoded size of a Command of type ct whose payload
// is n bytes.
func commandSize(ct CommandType, n int) int {
	size := 2 // version
	if ct != 0 {
		size += 1 + protowire.SizeVarint(uint64(ct))
	}
	if n > 0 {
		size += 1 + protowire.SizeBytes(n)
	}
	return size
}

// frameSize is the size of the frame of a Command of type ct whose payload
// is n bytes, its length included.
func frameSize(ct CommandType, n int) int {
	size := commandSize(ct, n)
	return protowire.SizeVarint(uint64(size)) + size
}

// requestSize is the encoded size of a Request without options.
func requestSize(t RequestType, reqID uint64, n int) int {
	size := 1 + protowire.SizeBytes(n)
	if n == 0 {
		size = 0
	}
	if t != RequestType_MESSAGE {
		size += 1 + protowire.SizeVarint(uint64(t))
	}
	if reqID != 0 {
		size += 1 + protowire.SizeVarint(reqID)
	}
	return size
}

// responseSize is the encoded size of a Response whose payload is n bytes.
func responseSize(code Code, reason string, reqID uint64, n int) int {
	size := 0
	if code != 0 {
		size += 1 + protowire.SizeVarint(uint64(int64(code)))
	}
	if reason != "" {
		size += 1 + protowire.SizeBytes(len(reason))
	}
	if reqID != 0 {
		size += 1 + protowire.SizeVarint(reqID)
	}
	if n > 0 {
		size += 1 + protowire.SizeBytes(n)
	}
	return size
}

// appendCommandHead appends a frame's length and its Command up to the
// tag and length of a payload of size bytes (none when size is 0): what
// is left to append is the payload itself.
func appendCommandHead(b []byte, ct CommandType, size int) []byte {
	b = binary.AppendUvarint(b, uint64(commandSize(ct, size)))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, Version)
	if ct != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(ct))
	}
	if size > 0 {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
	}
	return b
}

// appendBytesField appends field num holding msg, of encoded size n,
// unless n is 0.
func appendBytesField(b []byte, num protowire.Number, msg proto.Message, n int) ([]byte, error) {
	if n == 0 {
		return b, nil
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	return marshalSized(b, msg, n)
}

// marshalSized appends the encoding of msg, whose size n was just computed
// by proto.Size (which cached it in msg), so that it is not computed again.
func marshalSized(b []byte, msg proto.Message, n int) ([]byte, error) {
	if n == 0 {
		return b, nil
	}
	start := len(b)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, msg)
	if err != nil {
		return b, fmt.Errorf("encode payload: %w", err)
	}
	if len(b)-start != n {
		// msg changed between Size and Marshal: a caller's bug.
		return b, fmt.Errorf("encode payload: %d bytes, sized %d", len(b)-start, n)
	}
	return b, nil
}
