package quicsrv

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/quic-go/quic-go"
)

// QUICLB is a QUIC-LB configuration (draft-ietf-quic-load-balancers-21):
// the parameters a QUIC-aware load balancer and the servers behind it
// share, so that every connection ID a server issues carries that server's
// id and the balancer routes each packet by its destination connection ID,
// also after the device's address changed (migration, NAT rebinding).
//
// A connection ID is the first octet, then the server id and a nonce:
//
//	first octet: config rotation (3 bits) | CID length − 1 (5 bits)
//	then:        server id (ServerIDLen octets) | nonce (NonceLen octets)
//
// The nonce is random. Without a Key, the server id is in plaintext and
// every observer can tell which server a connection is on, and link a
// device's connection IDs by it. With a Key, ServerIDLen + NonceLen must be
// 16: the server id and nonce together are one AES-128 block, encrypted
// once with the key (the draft's single-pass encryption), so that the
// connection IDs of one server cannot be told apart from random ones by
// anyone without the key. The draft's four-pass encryption, for other
// lengths, is not implemented.
//
// A QUICLB's methods do not modify it and are safe for concurrent use.
type QUICLB struct {
	// ConfigID is the config rotation codepoint, 0 to 6 (7 marks
	// unroutable connection IDs). A balancer may know several
	// configurations at once, told apart by it.
	ConfigID int
	// ServerIDLen is the length of a server id in octets, 1 to 15.
	ServerIDLen int
	// NonceLen is the length of the nonce in octets, at least 4, with
	// ServerIDLen + NonceLen at most 19 (a connection ID has at most 20
	// octets). Random nonces repeat after about 2^(4·NonceLen) connection
	// IDs of one server (the birthday bound): 4 octets repeat after some
	// 65,000, 14 octets never in practice.
	NonceLen int
	// Key, if set, is the 16-byte AES-128 key that encrypts the server id
	// and nonce; then ServerIDLen + NonceLen must be 16. Nil means
	// plaintext server ids.
	Key []byte
}

// quicLBUnroutable is the config rotation codepoint of connection IDs
// that a balancer cannot route.
const quicLBUnroutable = 7

// ErrUnroutable is returned (wrapped) by QUICLB.ServerIDOf for a
// connection ID that does not carry a server id of the configuration: a
// balancer routes such a packet by its fallback (the address 4-tuple).
// Every client's first packets carry one, chosen by the client, until the
// server's connection ID replaces it.
var ErrUnroutable = errors.New("quicsrv: unroutable QUIC-LB connection ID")

// Validate reports whether the configuration is one QUICLB can use.
func (c *QUICLB) Validate() error {
	switch {
	case c.ConfigID < 0 || c.ConfigID >= quicLBUnroutable:
		return fmt.Errorf("quicsrv: QUIC-LB config id %d: want 0 to 6", c.ConfigID)
	case c.ServerIDLen < 1 || c.ServerIDLen > 15:
		return fmt.Errorf("quicsrv: QUIC-LB server id length %d: want 1 to 15 octets", c.ServerIDLen)
	case c.NonceLen < 4:
		return fmt.Errorf("quicsrv: QUIC-LB nonce length %d: want at least 4 octets", c.NonceLen)
	case c.ServerIDLen+c.NonceLen > 19:
		return fmt.Errorf("quicsrv: QUIC-LB server id and nonce lengths %d + %d: want at most 19 octets", c.ServerIDLen, c.NonceLen)
	case c.Key != nil && len(c.Key) != aes.BlockSize:
		return fmt.Errorf("quicsrv: QUIC-LB key of %d bytes: want 16", len(c.Key))
	case c.Key != nil && c.ServerIDLen+c.NonceLen != aes.BlockSize:
		return fmt.Errorf("quicsrv: QUIC-LB with a key needs server id and nonce lengths that sum to 16 (single-pass encryption), not %d + %d", c.ServerIDLen, c.NonceLen)
	}
	return nil
}

// CIDLen returns the length of the connection IDs of the configuration.
func (c *QUICLB) CIDLen() int { return 1 + c.ServerIDLen + c.NonceLen }

// ServerIDOf returns the server id that cid carries, as a load balancer
// reads it to route a packet whose destination connection ID is cid. It
// fails with ErrUnroutable if cid is not a connection ID of this
// configuration: another config rotation codepoint (or the unroutable
// one), or too short. Octets beyond CIDLen are ignored, as the draft
// allows. It does not check that the server id belongs to a server: the
// balancer does, with its table of server ids.
func (c *QUICLB) ServerIDOf(cid []byte) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(cid) < c.CIDLen() {
		return nil, fmt.Errorf("%w: %d octets, want %d", ErrUnroutable, len(cid), c.CIDLen())
	}
	if got := int(cid[0] >> 5); got != c.ConfigID {
		return nil, fmt.Errorf("%w: config %d, want %d", ErrUnroutable, got, c.ConfigID)
	}
	if c.Key == nil {
		return append([]byte(nil), cid[1:1+c.ServerIDLen]...), nil
	}
	block, err := aes.NewCipher(c.Key)
	if err != nil {
		return nil, fmt.Errorf("quicsrv: QUIC-LB key: %w", err)
	}
	var plain [aes.BlockSize]byte
	block.Decrypt(plain[:], cid[1:1+aes.BlockSize])
	return append([]byte(nil), plain[:c.ServerIDLen]...), nil
}

// Generator returns the connection ID generator of the server with id
// serverID (ServerIDLen octets) under this configuration, for
// Server.ConnectionIDGenerator or quic.Transport.ConnectionIDGenerator.
func (c *QUICLB) Generator(serverID []byte) (*QUICLBGenerator, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(serverID) != c.ServerIDLen {
		return nil, fmt.Errorf("quicsrv: QUIC-LB server id of %d octets: want %d", len(serverID), c.ServerIDLen)
	}
	g := &QUICLBGenerator{cfg: *c, serverID: append([]byte(nil), serverID...)}
	if c.Key != nil {
		block, err := aes.NewCipher(c.Key)
		if err != nil {
			return nil, fmt.Errorf("quicsrv: QUIC-LB key: %w", err)
		}
		g.block = block
	}
	return g, nil
}

// QUICLBGenerator issues the QUIC-LB connection IDs of one server: each
// carries the server's id and a fresh random nonce. It implements
// quic.ConnectionIDGenerator and is safe for concurrent use (quic-go calls
// it from every connection).
type QUICLBGenerator struct {
	// Static after construction.
	cfg      QUICLB
	serverID []byte
	block    cipher.Block // nil without a key; AES keeps no state between calls
}

var _ quic.ConnectionIDGenerator = (*QUICLBGenerator)(nil)

// GenerateConnectionID returns a new connection ID. It never fails.
func (g *QUICLBGenerator) GenerateConnectionID() (quic.ConnectionID, error) {
	var nonce [18]byte
	rand.Read(nonce[:g.cfg.NonceLen]) // never fails (crypto/rand)
	return quic.ConnectionIDFromBytes(g.encode(nonce[:g.cfg.NonceLen])), nil
}

// ConnectionIDLen returns the length of the connection IDs it issues.
func (g *QUICLBGenerator) ConnectionIDLen() int { return g.cfg.CIDLen() }

// encode returns the connection ID with nonce, which has NonceLen octets.
func (g *QUICLBGenerator) encode(nonce []byte) []byte {
	cid := make([]byte, g.cfg.CIDLen())
	// The first octet self-describes the length (for hardware offload;
	// balancers ignore it).
	cid[0] = byte(g.cfg.ConfigID<<5) | byte(len(cid)-1)
	n := copy(cid[1:], g.serverID)
	copy(cid[1+n:], nonce)
	if g.block != nil {
		g.block.Encrypt(cid[1:], cid[1:])
	}
	return cid
}
