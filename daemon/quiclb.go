package daemon

import (
	"encoding/binary"

	"github.com/quic-go/quic-go"

	"github.com/qim-im/qim/quicsrv"
)

// The connection IDs of the nodes of a cluster (Config.ServerID 1 to
// MaxServerID) follow QUIC-LB (quicsrv.QUICLB), so that a QUIC-aware load
// balancer routes every packet to the node that issued its connection ID:
// config rotation 0, the server id in 2 octets (big-endian), a random
// 14-octet nonce, both encrypted in one AES-128 block with the QUIC-LB
// key (serverKeys). They are 17 octets long; the first is always 0x10.
// Server id 0, a single node, keeps quic-go's random 4-octet connection
// IDs.

// quicLB returns the QUIC-LB configuration of the nodes that share keys'
// master key.
func quicLB(keys *serverKeys) *quicsrv.QUICLB {
	return &quicsrv.QUICLB{ServerIDLen: 2, NonceLen: 14, Key: keys.quicLB[:]}
}

// connIDGenerator returns the connection ID generator of the node with
// serverID: nil (quic-go's) for 0.
func connIDGenerator(keys *serverKeys, serverID int) (quic.ConnectionIDGenerator, error) {
	if serverID == 0 {
		return nil, nil
	}
	g, err := quicLB(keys).Generator(binary.BigEndian.AppendUint16(nil, uint16(serverID)))
	if err != nil {
		return nil, err
	}
	return g, nil
}

// QUICLB returns the QUIC-LB configuration of the cluster whose nodes
// share the master key of dataDir (DATA/keys/server.key): what a load
// balancer needs to route packets to the nodes. Its ServerIDOf gives a
// node's Config.ServerID as 2 big-endian octets. The configuration holds
// the QUIC-LB key, a secret. QUICLB reads the master key and creates
// nothing.
func QUICLB(dataDir string) (*quicsrv.QUICLB, error) {
	master, err := readMasterKey(masterKeyPath(dataDir))
	if err != nil {
		return nil, err
	}
	keys, err := deriveKeys(master, 0)
	if err != nil {
		return nil, err
	}
	return quicLB(keys), nil
}
