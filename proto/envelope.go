package qimpb

// The envelopes (Command, Request, Response) of the message path, encoded
// by hand: the payload is marshalled once, straight into the frame, byte
// for byte as proto.Marshal would (the encoder tests compare them).

import (
	"encoding/binary"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

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
